"""A detector behind ``effnet serve`` (``POST /detect``): the :class:`~effnet.deploy.engines.ServedModel` of the
detect task, giving exactly the boxes ``effnet detect predict`` gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..data.coco import detection_eval_image
from ..deploy.engines import Engines
from ..errors import UsageError
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

    def preprocess(self, image: Image.Image, score_threshold: float = 0.3, **options: Any) -> DetectInput:
        x, scale = detection_eval_image(image, self.config.mean, self.config.std, self.config.resolution)
        return DetectInput(x, scale, image.width, image.height, score_threshold)

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

    def answer(self, found: dict, **options: Any) -> dict:
        return {"width": found["width"], "height": found["height"], "detections": [
            {"box": [round(v, 2) for v in b], "score": round(s, 4), "label": int(lab), "class": self.labels[lab]}
            for b, s, lab in zip(found["boxes"], found["scores"], found["labels"])]}


def served_detector(model: nn.Module, backend: str = "auto", calibration: str | None = None, copies: int = 1,
                    threads: int | None = None) -> Detector:
    """The plain eval model, as ``effnet detect predict`` runs it: the same boxes, not just close ones."""
    if backend not in ("auto", "torch"):
        raise UsageError(f"a detector is served with --backend torch (or auto), not {backend}")
    return Detector(Engines([model.eval()] * copies), name=model.config.name, backend="torch")
