"""Evaluating a detector: COCO metrics (pycocotools' COCOeval) over a COCO-layout split, batched detection."""

from __future__ import annotations

import contextlib
import io
import time

import torch
from torch import nn

from ..data.coco import CocoSplit, DetectionSamples, collate_detection
from .boxes import Detections, anchors_for, flatten_outputs, postprocess

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def eval_loader(split: CocoSplit, config, resolution: int, batch_size: int, workers: int = 0):
    ds = DetectionSamples(split, config.mean, config.std, resolution, train=False)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       collate_fn=collate_detection)


def detect_batch(model: nn.Module, x: torch.Tensor, scales: list[float], amp: bool = False,
                 channels_last: bool = False, score_threshold: float = 0.0) -> list[Detections]:
    """Raw forward + decoding + NMS for a batch of letterboxed images; boxes in original-image pixels."""
    config = model.config
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        class_out, box_out = model(x)
    cls, box = flatten_outputs(class_out, box_out, config.num_classes)
    anchors = anchors_for(config, x.shape[-2], x.shape[-1])
    return postprocess(cls, box, anchors, (x.shape[-2], x.shape[-1]), scales, score_threshold=score_threshold)


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


@torch.inference_mode()
def evaluate_detector(model: nn.Module, split: CocoSplit, resolution: int, batch_size: int = 16, workers: int = 0,
                      amp: bool = False, channels_last: bool = False, score_threshold: float = 0.05) -> dict:
    """COCO metrics of ``model`` on ``split`` plus images/s (forward + decoding + NMS, not image decoding).

    Candidates under ``score_threshold`` are dropped before NMS (torchvision's RetinaNet default, 0.05):
    an untrained head scores every anchor near its 0.01 prior, and NMS over thousands of them is slow.
    """
    was_training = model.training
    model.eval()
    results, seconds, images = [], 0.0, 0
    for x, targets in eval_loader(split, model.config, resolution, batch_size, workers):
        t0 = time.perf_counter()
        dets = detect_batch(model, x, [t["scale"] for t in targets], amp, channels_last, score_threshold)
        seconds += time.perf_counter() - t0
        images += x.shape[0]
        for t, d in zip(targets, dets):
            for (x0, y0, x1, y1), s, lab in zip(d.boxes.tolist(), d.scores.tolist(), d.labels.tolist()):
                results.append(dict(image_id=t["image_id"], category_id=split.categories[lab]["id"],
                                    bbox=[x0, y0, x1 - x0, y1 - y0], score=s))
    model.train(was_training)
    return dict(coco_metrics(split, results), images=images, images_per_s=images / max(seconds, 1e-9))
