"""Detecting objects in image files with a detector and its own preprocessing (``effnet detect predict``), and
drawing what was found."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..data import check_image, load_image
from ..errors import ImageLoadError
from ..results import detection
from .pipeline import SCORE_THRESHOLD
from .predictor import Predictor


def predict_files(model: nn.Module, paths: list[str | os.PathLike], score_threshold: float = SCORE_THRESHOLD,
                  resolution: int | None = None) -> list[dict]:
    """Detections for each image file, in :func:`effnet.results.detection`'s schema (``{"path", "width", "height",
    "detections": [{"label" (class name), "index", "score", "box" (x1, y1, x2, y2 pixels)}]}``), by
    :class:`effnet.detect.Predictor` at ``resolution`` (default the model's). An unreadable file raises
    :class:`effnet.errors.ImageLoadError` before any work."""
    return predict_paths(Predictor(model, score_threshold=score_threshold, resolution=resolution), paths)


def predict_paths(predictor, paths: list[str | os.PathLike]) -> list[dict]:
    """:class:`effnet.detect.Predictor` on image files, one :func:`effnet.results.detection` dict per file (boxes in
    the file's pixels, class names from the weights). An unreadable file raises :class:`ImageLoadError` first."""
    for path in paths:  # every file checked before any work
        if (problem := check_image(path)) is not None:
            raise ImageLoadError(f"{path}: {problem}")
    out = []
    for path in paths:  # one at a time: a folder of photos never sits in memory as a batch
        image = load_image(path)
        found = predictor([image])[0]
        out.append(detection(found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist(),
                             predictor.class_names, image.width, image.height, path=str(path)))
    return out


def draw_detections(path: str | os.PathLike, prediction: dict):
    """The image with its boxes and "class score" labels drawn (torchvision ``draw_bounding_boxes``), as PIL;
    ``prediction`` in the :func:`effnet.results.detection` schema."""
    from torchvision.transforms.v2 import functional as TF
    from torchvision.utils import draw_bounding_boxes

    image = TF.to_image(load_image(path))
    dets = prediction["detections"]
    if not dets:
        return TF.to_pil_image(image)
    boxes = torch.tensor([d["box"] for d in dets], dtype=torch.float32)
    labels = [f"{d['label']} {d['score']:.2f}" for d in dets]
    palette = ["red", "lime", "blue", "yellow", "magenta", "cyan", "orange", "white", "purple", "pink"]
    colors = [palette[d["index"] % len(palette)] for d in dets]
    width = max(2, round(max(image.shape[-2:]) / 300))
    drawn = draw_bounding_boxes(image, boxes, labels, colors=colors, width=width)
    return TF.to_pil_image(drawn)
