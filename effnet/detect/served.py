"""A detector behind ``effnet serve`` (``POST /detect``, and ``/v2/models/{name}/infer`` of the Open Inference
Protocol): the :class:`~effnet.deploy.engines.ServedModel` of the detect task, on any of
:class:`~effnet.detect.Predictor`'s backends, giving exactly the boxes ``effnet detect predict`` gives with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.coco import detection_eval_image
from ..deploy.engines import Engines
from ..errors import UsageError
from ..results import detection, label_names
from ..taskspec import TaskSpec
from .predictor import Predictor


@dataclass
class DetectInput:
    """A letterboxed image, its resize scale, its original size and the request's score threshold."""

    x: torch.Tensor
    scale: float
    width: int
    height: int
    score_threshold: float


@dataclass
class Detector:
    """An EfficientDet: letterbox preprocessing, then :class:`~effnet.detect.Predictor` (one per inference thread:
    ``engines``) on the batch, exactly as ``effnet detect predict`` (:func:`effnet.detect.predict.predict_paths`)."""

    task: TaskSpec  # detection's task object (its route, its options)
    engines: Engines  # of Predictor
    name: str
    backend: str
    config: Any = field(init=False)

    def __post_init__(self) -> None:
        self.config = self.engines.first.config
        self.labels = label_names(self.config.class_names, self.config.num_classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One letterboxed image (the protocol's FP32 input)."""
        return 3, self.config.resolution, self.config.resolution

    def refuse_size(self, width: int, height: int) -> str | None:
        """Letterboxing only ever shrinks to the model's size: whatever --max-megapixels lets through is fine."""
        return None

    def preprocess(self, image: Image.Image, *, score_threshold: float, **options: Any) -> DetectInput:
        x, scale = detection_eval_image(image, self.config.mean, self.config.std, self.config.resolution)
        return DetectInput(x, scale, image.width, image.height, score_threshold)

    def tensor_input(self, x: torch.Tensor, *, score_threshold: float, **options: Any) -> DetectInput:
        """An already letterboxed, normalised image: boxes come back in its own pixels."""
        return DetectInput(x, 1.0, x.shape[-1], x.shape[-2], score_threshold)

    def run_batch(self, inputs: list[DetectInput]) -> list[dict]:
        """Detections (boxes in original-image pixels, clipped to each image) for each input, as one batch at the
        lowest threshold asked, then each image's own: NMS keeps boxes greedily by score, so what scores over a
        higher threshold is exactly what it would have kept at that threshold."""
        x = torch.stack([i.x for i in inputs])
        valid = [(i.height * i.scale, i.width * i.scale) for i in inputs]
        found = self.engines.get().detect(x, [i.scale for i in inputs], valid,
                                          min(i.score_threshold for i in inputs))
        out = []
        for item, (boxes, scores, labels) in zip(inputs, found):
            keep = scores > item.score_threshold
            out.append(dict(width=item.width, height=item.height, boxes=boxes[keep].tolist(),
                            scores=scores[keep].tolist(), labels=labels[keep].tolist()))
        return out

    def answer(self, found: dict, path: str | None = None, **options: Any) -> dict:
        return detection(found["boxes"], found["scores"], found["labels"], self.labels, found["width"],
                         found["height"], path=path)

    # ---- the Open Inference Protocol (effnet.serve.protocol): its outputs
    def output_metadata(self) -> list[tuple[str, str, list[int]]]:
        return [("boxes", "FP32", [-1, -1, 4]), ("scores", "FP32", [-1, -1]), ("labels", "BYTES", [-1, -1]),
                ("indices", "INT64", [-1, -1]), ("num_detections", "INT32", [-1])]

    def output_tensors(self, outputs: list[dict], **options: Any) -> dict[str, np.ndarray]:
        """Each image's boxes (x1, y1, x2, y2 in its pixels), scores, class names and indices, padded to the
        most boxes any image of the request has (padding: zeros, "" and index -1); ``num_detections`` says
        how many of each row are real."""
        n, most = len(outputs), max((len(o["scores"]) for o in outputs), default=0)
        boxes, scores = np.zeros((n, most, 4), np.float32), np.zeros((n, most), np.float32)
        labels, indices = np.full((n, most), b"", dtype=object), np.full((n, most), -1, np.int64)
        for row, found in enumerate(outputs):
            k = len(found["scores"])
            if k:
                boxes[row, :k], scores[row, :k], indices[row, :k] = found["boxes"], found["scores"], found["labels"]
                labels[row, :k] = [self.labels[i].encode() for i in found["labels"]]
        counts = np.array([len(o["scores"]) for o in outputs], np.int32)
        return {"boxes": boxes, "scores": scores, "labels": labels, "indices": indices, "num_detections": counts}


def served_detector(task: TaskSpec, model: nn.Module, backend: str = "auto", calibration: str | None = None,
                    copies: int = 1, threads: int | None = None) -> Detector:
    """``model`` behind :class:`~effnet.detect.Predictor` on ``backend`` (any of its backends; ``auto``: the plain
    PyTorch model, whose boxes are effdet's exactly), ``copies`` engines for as many inference threads: the PyTorch
    module is shared, an exported graph gets a runtime session each (``threads`` intra-op threads)."""
    def predictor() -> Predictor:
        return Predictor(model, backend, calibration=calibration, threads=threads)

    try:
        first = predictor()
        engines = [first] * copies if first.backend == "torch" else [first] + [predictor() for _ in range(copies - 1)]
    except UsageError:
        raise
    except Exception as exc:  # export / quantization problems: one line, not a traceback
        raise UsageError(f"backend {backend}: {exc}") from None
    return Detector(task, Engines(engines), name=model.config.name, backend=first.backend)
