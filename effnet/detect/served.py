"""A detector behind ``effnet serve`` (``POST /detect``, and ``/v2/models/{name}/infer`` of the Open Inference
Protocol): the :class:`~effnet.deploy.engines.ServedModel` of the detect task, giving exactly the boxes
``effnet detect predict`` gives."""

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
from ..results import detection
from .boxes import anchors_for, flatten_outputs, postprocess


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
    """An EfficientDet: letterbox preprocessing, forward as one batch, decoding + per-class NMS per image,
    exactly as ``effnet detect predict`` (:func:`effnet.detect.predict.predict_files`) does it."""

    engines: Engines
    name: str
    backend: str
    kind: str = "detect"
    config: Any = field(init=False)

    def __post_init__(self) -> None:
        self.config = self.engines.first.config
        self.labels = self.config.class_names or tuple(str(i) for i in range(self.config.num_classes))
        res = self.config.resolution
        self.anchors = anchors_for(self.config, res, res)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One letterboxed image (the protocol's FP32 input)."""
        return 3, self.config.resolution, self.config.resolution

    def refuse_size(self, width: int, height: int) -> str | None:
        """Letterboxing only ever shrinks to the model's size: whatever --max-megapixels lets through is fine."""
        return None

    def preprocess(self, image: Image.Image, score_threshold: float = 0.3, **options: Any) -> DetectInput:
        x, scale = detection_eval_image(image, self.config.mean, self.config.std, self.config.resolution)
        return DetectInput(x, scale, image.width, image.height, score_threshold)

    def tensor_input(self, x: torch.Tensor, score_threshold: float = 0.3, **options: Any) -> DetectInput:
        """An already letterboxed, normalised image: boxes come back in its own pixels."""
        return DetectInput(x, 1.0, x.shape[-1], x.shape[-2], score_threshold)

    @torch.inference_mode()
    def run_batch(self, inputs: list[DetectInput]) -> list[dict]:
        """Detections (boxes in original-image pixels) for each input; the forward pass is one batch."""
        x = torch.stack([i.x for i in inputs])
        class_out, box_out = self.engines.get()(x)
        cls, box = flatten_outputs(class_out, box_out, self.config.num_classes)
        out = []
        for row, item in enumerate(inputs):  # each request has its own threshold: post-process image by image
            det = postprocess(cls[row:row + 1], box[row:row + 1], self.anchors, tuple(x.shape[-2:]), [item.scale],
                              score_threshold=item.score_threshold)[0]
            out.append(dict(width=item.width, height=item.height, boxes=det.boxes.tolist(),
                            scores=det.scores.tolist(), labels=det.labels.tolist()))
        return out

    def answer(self, found: dict, path: str | None = None, **options: Any) -> dict:
        return detection(found["boxes"], found["scores"], found["labels"], self.labels, found["width"],
                         found["height"], path=path)

    # ---- the Open Inference Protocol (effnet.serve.protocol): its request parameters and outputs
    def options_from(self, parameters: dict) -> dict:
        """``score_threshold`` (0..1, default 0.3) from a request's parameters; UsageError naming it otherwise."""
        threshold = parameters.get("score_threshold", 0.3)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise UsageError(f"score_threshold must be a number in 0..1, got {threshold!r}")
        return {"score_threshold": float(threshold)}

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


def served_detector(model: nn.Module, backend: str = "auto", calibration: str | None = None, copies: int = 1,
                    threads: int | None = None) -> Detector:
    """The plain eval model, as ``effnet detect predict`` runs it: the same boxes, not just close ones."""
    if backend not in ("auto", "torch"):
        raise UsageError(f"a detector is served with --backend torch (or auto), not {backend}")
    return Detector(Engines([model.eval()] * copies), name=model.config.name, backend="torch")
