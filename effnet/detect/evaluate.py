"""Evaluating a detector: COCO metrics (pycocotools' COCOeval) over a COCO-layout split, batched detection."""

from __future__ import annotations

import contextlib
import io
import time

import torch
from torch import nn

from ..data.coco import CocoSplit, DetectionSamples, collate_detection
from ..deploy.predictors import at_resolution
from .boxes import Detections
from .pipeline import CANDIDATE_SCORE_THRESHOLD, DetectionPipeline
from .predictor import Predictor

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def eval_loader(split: CocoSplit, config, resolution: int, batch_size: int, workers: int = 0):
    ds = DetectionSamples(split, config.mean, config.std, resolution, train=False)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       collate_fn=collate_detection)


def detect_batch(model: nn.Module, x: torch.Tensor, scales: list[float], amp: bool = False,
                 channels_last: bool = False, score_threshold: float = 0.0,
                 clip_sizes: list[tuple[float, float]] | None = None) -> list[Detections]:
    """Raw forward + :class:`~effnet.detect.pipeline.DetectionPipeline` for a batch of letterboxed images; boxes
    clipped to each image's own (height, width) in input pixels (``clip_sizes``, default the whole input) and
    returned in original-image pixels."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        class_out, box_out = model(x)
    pipeline = DetectionPipeline.for_input(model.config, x.shape[-2:], score_threshold=score_threshold)
    return pipeline(class_out, box_out, scales, clip_sizes)


def coco_metrics(split: CocoSplit, results: list[dict]) -> dict[str, float | None]:
    """AP, AP50, AP75, APs, APm, APl (fractions; None where the val set has no object of that size)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {k: 0.0 for k in METRIC_KEYS}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        gt = COCO()
        gt.dataset = split.coco_ground_truth()
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {k: (float(v) if v >= 0 else None) for k, v in zip(METRIC_KEYS, evaluator.stats[:6])}


def _detector(model: nn.Module, split: CocoSplit, backend: str, calibration: str | None, amp: bool,
              channels_last: bool, score_threshold: float):
    """(letterboxed batch, its targets) -> per image (boxes in original pixels, scores, labels): the PyTorch path
    (with ``amp`` / ``channels_last``), or ``backend``'s (:class:`effnet.detect.Predictor`'s engines); either way
    each image's boxes are clipped to its own area, as effdet does."""
    engine = None if backend == "torch" else Predictor(model, backend, score_threshold, calibration)
    sizes = {image.id: (image.height, image.width) for image in split.images}

    def run(x, targets):
        scales = [t["scale"] for t in targets]
        valid = [tuple(v * s for v in sizes[t["image_id"]]) for t, s in zip(targets, scales)]
        if engine is not None:
            return engine.detect(x, scales, valid)
        dets = detect_batch(model, x, scales, amp, channels_last, score_threshold, valid)
        return [(d.boxes, d.scores, d.labels) for d in dets]
    return run


@torch.inference_mode()
def evaluate_detector(model: nn.Module, split: CocoSplit, resolution: int, batch_size: int = 16, workers: int = 0,
                      amp: bool = False, channels_last: bool = False,
                      score_threshold: float = CANDIDATE_SCORE_THRESHOLD,
                      backend: str = "torch", calibration: str | None = None) -> dict:
    """COCO metrics of ``model`` on ``split`` plus images/s (forward + decoding + NMS, not image decoding).

    Candidates under ``score_threshold`` are dropped before NMS (torchvision's RetinaNet default, 0.05):
    an untrained head scores every anchor near its 0.01 prior, and NMS over thousands of them is slow.
    ``backend`` (``effnet.detect.predictor.DETECT_BACKENDS``) other than ``torch`` scores the end-to-end graph
    exported at ``resolution``; ``openvino-int8`` is calibrated on the images in the folder ``calibration``.
    """
    was_training = model.training
    model.eval()
    if backend != "torch":
        at_resolution(model, resolution)  # the exported graph's fixed input size
    detect = _detector(model, split, backend, calibration, amp, channels_last, score_threshold)
    results, seconds, images = [], 0.0, 0
    for x, targets in eval_loader(split, model.config, resolution, batch_size, workers):
        t0 = time.perf_counter()
        dets = detect(x, targets)
        seconds += time.perf_counter() - t0
        images += x.shape[0]
        for t, (boxes, scores, labels) in zip(targets, dets):
            for (x0, y0, x1, y1), s, lab in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                results.append(dict(image_id=t["image_id"], category_id=split.categories[lab]["id"],
                                    bbox=[x0, y0, x1 - x0, y1 - y0], score=s))
    model.train(was_training)
    return dict(coco_metrics(split, results), images=images, images_per_s=images / max(seconds, 1e-9))
