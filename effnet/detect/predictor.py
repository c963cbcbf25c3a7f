"""``effnet.detect.Predictor``: images in, final boxes out, in PyTorch's detection convention.

``Predictor(model)(images)`` takes a list of PIL images or CHW float tensors in [0, 1] of any sizes and returns one
dict per image: ``boxes`` (K, 4) x1, y1, x2, y2 in that image's own pixels, ``scores`` (K,), ``labels`` (K,) the
model's output indices, and ``names`` (K,) the class names the weights carry (COCO's for the published
detectors). Each image is letterboxed to the model's input size with the model's own mean/std; the batch runs as one
forward pass; decoding, clipping to the image and per-class NMS (:class:`effnet.detect.pipeline.DetectionPipeline`)
follow effdet / the official post-processing, so on the same weights the boxes are effdet's ``DetBenchPredict``'s.

``backend`` other than ``torch`` runs the end-to-end exported graph (decoding and NMS inside; exported once,
verified and cached, as ``predict --backend`` does for classifiers): ``onnx`` (ONNX Runtime), ``openvino``,
``openvino-int8`` (NNCF, calibrated on ``calibration``). ``executorch`` / ``executorch-int8`` (XNNPACK; int8 by PT2E)
run the raw outputs as an ExecuTorch program at batch 1 and decode + NMS here (:mod:`effnet.detect.executorch` says
why not end to end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from PIL import Image
from torch import nn

from ..data.coco import detection_eval_image
from ..deploy.optimize import optimize
from ..deploy.predictors import ExportedFile
from ..errors import UsageError
from ..results import label_names
from .pipeline import CANDIDATE_SCORE_THRESHOLD as DEFAULT_SCORE_THRESHOLD  # below it, NMS only spends time
from .boxes import has_area
from .pipeline import DetectionPipeline

DETECT_BACKENDS = ("torch", "onnx", "openvino", "openvino-int8", "executorch", "executorch-int8")


def _as_input(image) -> Image.Image | torch.Tensor:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] == 3 and image.is_floating_point():
        return image.float()
    raise UsageError("Predictor takes PIL images or CHW float tensors in [0, 1] with 3 channels; got "
                     f"{type(image).__name__}{tuple(image.shape) if isinstance(image, torch.Tensor) else ''}")


def _size(image) -> tuple[int, int]:
    return (image.height, image.width) if isinstance(image, Image.Image) else tuple(image.shape[-2:])


def preprocess(config, images: Sequence) -> tuple[torch.Tensor, list[float], list[tuple[float, float]]]:
    """Letterboxed, normalised batch for ``config``; each image's resize scale and its (height, width) in input
    pixels."""
    xs, scales, valid = [], [], []
    for image in map(_as_input, images):
        x, scale = detection_eval_image(image, config.mean, config.std, config.resolution)
        h, w = _size(image)
        xs.append(x)
        scales.append(scale)
        valid.append((h * scale, w * scale))
    return torch.stack(xs), scales, valid


class Predictor:
    """Final detections for a list of images (see the module docstring).

    ``fold_batchnorm`` runs PyTorch on the inference copy (:func:`effnet.deploy.optimize`: BatchNorm folded,
    channels_last), ~4x faster for D0 at 512 px on a CPU; its scores differ from the plain model's by float rounding
    (boxes ~1e-3 px), so detections whose scores tie may come in another order. Off: effdet's boxes exactly.
    ``resolution``: letterbox to this size instead of the model's (PyTorch only).
    """

    def __init__(self, model: nn.Module, backend: str = "torch", score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                 calibration: str | None = None, threads: int | None = None, max_detections: int = 100,
                 fold_batchnorm: bool = False, resolution: int | None = None) -> None:
        if isinstance(model, ExportedFile):  # an exported file: it decides the engine
            backend = model.info.backend if backend == "auto" else backend
        else:
            backend = "torch" if backend == "auto" else backend  # exported graphs are opt-in: torch is exact
        if backend not in DETECT_BACKENDS and not isinstance(model, ExportedFile):
            raise UsageError(f"unknown detector backend {backend!r} ({', '.join(DETECT_BACKENDS)})")
        if resolution not in (None, model.config.resolution) and backend != "torch":
            raise UsageError(f"--backend {backend} runs the graph exported at the model's input size; set "
                             "model.config's resolution instead")  # the cached exports are keyed by the config
        self.model, self.config = model.eval(), model.config.replace(resolution=resolution or model.config.resolution)
        self.backend, self.score_threshold, self.max_detections = backend, score_threshold, max_detections
        self.class_names = label_names(self.config.class_names, self.config.num_classes)
        self.pipeline = DetectionPipeline.for_input(self.config, score_threshold=score_threshold,
                                                    max_detections=max_detections)
        self.engine, self.runner = None, self.model
        if isinstance(model, ExportedFile):
            from .export import file_engines

            self.engine, runner = file_engines(model, backend, threads, max_detections)
            self.runner = runner or self.runner
        elif backend == "torch" and fold_batchnorm:
            folded = optimize(self.model)
            self.runner = lambda x: folded(x.contiguous(memory_format=torch.channels_last))
        elif backend.startswith("executorch"):
            from .executorch import executorch_runner

            self.runner = executorch_runner(model, backend.endswith("-int8"), calibration)
        elif backend != "torch":
            from .export import end_to_end_engine  # exporting needs onnx / openvino, only for these backends

            self.engine = end_to_end_engine(model, backend, calibration, threads, max_detections=max_detections)

    def preprocess(self, images: Sequence) -> tuple[torch.Tensor, list[float], list[tuple[float, float]]]:
        return preprocess(self.config, images)

    @torch.inference_mode()
    def detect(self, x: torch.Tensor, scales: list[float], valid: list[tuple[float, float]],
               score_threshold: float | None = None) -> list[tuple]:
        """(boxes in original pixels, scores, labels) per image of a preprocessed batch; ``score_threshold``: this
        call's instead of the predictor's (an exported graph keeps only what scores over its own ``CANDIDATE_SCORE_THRESHOLD``)."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        if self.engine is not None:
            found = self.engine(x, torch.tensor(valid, dtype=torch.float32), threshold)
            # the graph drops boxes without area itself; one exported before it did (a cache an earlier effnet
            # left) would still return them
            return [(b[k] / s, sc[k], lab[k]) for (b, sc, lab), s in zip(found, scales) for k in [has_area(b)]]
        # sized by the batch: a caller may letterbox to another size (torch only; exported graphs are fixed)
        pipeline = replace(self.pipeline, height=x.shape[-2], width=x.shape[-1], score_threshold=threshold)
        return [(d.boxes, d.scores, d.labels) for d in pipeline(*self.runner(x), scales, valid)]

    def __call__(self, images: Sequence) -> list[dict]:
        if isinstance(images, (Image.Image, torch.Tensor)):
            images = [images]
        if not images:
            return []
        out = []
        for boxes, scores, labels in self.detect(*self.preprocess(images)):
            out.append(dict(boxes=boxes, scores=scores, labels=labels.long(),
                            names=[self.class_names[i] for i in labels.tolist()]))
        return out
