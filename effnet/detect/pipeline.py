"""Detection's post-processing, in one place: a detector's raw per-level outputs -> final boxes.

:class:`DetectionPipeline` is built from a detector's config and its input size: the anchors for that size, box
decoding, clipping to each image, per-class NMS and the way back to the image's own pixels, with the score
threshold and the number of detections kept as fields. Evaluation (:mod:`.evaluate`), :class:`.Predictor` (every
backend), the served detector (:mod:`.served`), the ExecuTorch program (:mod:`.executorch`) and the end-to-end
export graph and its verification (:mod:`.export`) all go through it, so that they cannot drift apart. How many
pyramid levels the outputs have comes from the config (P3-P7: five; D7x's P3-P8: six).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import nms

from .boxes import Detections, anchors_for, decode, flatten_outputs, has_area, postprocess

# The default for boxes shown to a person (``effnet detect predict``, ``POST /detect``, the protocol, the page):
# below it, an image of a few objects comes back with dozens of weak duplicates.
SCORE_THRESHOLD = 0.3
# Candidates kept for scoring and for the exported graphs (torchvision's RetinaNet default): an untrained head
# scores every anchor near its 0.01 prior, and NMS over thousands of them only spends time.
CANDIDATE_SCORE_THRESHOLD = 0.05


def level_count(config) -> int:
    """How many pyramid levels a detector's heads output (5 for P3-P7, 6 for D7x's P3-P8)."""
    return config.num_levels


@dataclass(frozen=True)
class DetectionPipeline:
    """Raw outputs of a ``height`` x ``width`` input -> :class:`~effnet.detect.boxes.Detections` per image, as the
    official post-processing / effdet: the best ``max_candidates`` (anchor, class) pairs, decoded, clipped, those
    over ``score_threshold`` through per-class NMS at ``iou_threshold``, the best ``max_detections`` kept."""

    config: object  # the detector's DetectorConfig: classes, levels, anchor layout
    height: int
    width: int
    score_threshold: float = CANDIDATE_SCORE_THRESHOLD
    max_detections: int = 100
    max_candidates: int = 5000
    iou_threshold: float = 0.5

    @staticmethod
    def for_input(config, size: int | Sequence[int] | None = None, **fields) -> DetectionPipeline:
        """The pipeline for inputs of ``size`` (an int for a square, (height, width), default the config's)."""
        size = size or config.resolution
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return DetectionPipeline(config, height, width, **fields)

    @property
    def levels(self) -> int:
        return level_count(self.config)

    @property
    def anchors(self) -> torch.Tensor:
        return anchors_for(self.config, self.height, self.width)  # cached per size

    def output_names(self) -> list[str]:
        """Names of the flat raw outputs (class levels, then box levels): ``class_p3`` ... ``box_p7`` (``p8``)."""
        levels = range(self.config.min_level, self.config.max_level + 1)
        return [f"class_p{i}" for i in levels] + [f"box_p{i}" for i in levels]

    def split(self, outputs: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Flat raw outputs (an exported program's: class levels, then box levels) as the model's (class, box)."""
        n = self.levels
        if len(outputs) != 2 * n:
            raise ValueError(f"{self.config.name}: expected {2 * n} raw outputs ({n} levels), got {len(outputs)}")
        return list(outputs[:n]), list(outputs[n:])

    def __call__(self, class_out: Sequence[torch.Tensor], box_out: Sequence[torch.Tensor],
                 scales: Sequence[float] | None = None,
                 clip_sizes: Sequence[Sequence[float]] | None = None) -> list[Detections]:
        """Detections per image of a batch: boxes clipped to each image's own (height, width) in input pixels
        (``clip_sizes``; default the whole input), then divided by its resize ``scales`` (its own pixels)."""
        cls, box = flatten_outputs(class_out, box_out, self.config.num_classes)
        clips = None if clip_sizes is None else [tuple(float(v) for v in hw) for hw in clip_sizes]
        return postprocess(cls, box, self.anchors, (self.height, self.width), list(scales) if scales else None,
                           self.max_candidates, self.iou_threshold, self.max_detections, self.score_threshold, clips)

    def flat(self, outputs: Sequence[torch.Tensor], scales: Sequence[float] | None = None,
             clip_sizes: Sequence[Sequence[float]] | None = None) -> list[Detections]:
        """:meth:`__call__` on flat raw outputs (ExecuTorch's, raw ONNX's)."""
        return self(*self.split(outputs), scales, clip_sizes)

    def graph(self, class_out: Sequence[torch.Tensor], box_out: Sequence[torch.Tensor], image_hw: torch.Tensor):
        """:meth:`__call__` for one image in a form ``torch.onnx.export`` traces (the end-to-end graph): boxes (K, 4)
        in input pixels clipped to ``image_hw`` (2,), scores (K,), classes (K,). Verified against :meth:`__call__`
        on real images before an exported file is kept (:mod:`effnet.detect.export`)."""
        num_classes = self.config.num_classes
        cls, box = flatten_outputs(class_out, box_out, num_classes)
        anchors = self.anchors
        logits, idx = cls[0].reshape(-1).topk(min(self.max_candidates, anchors.shape[0] * num_classes))
        anchor_idx, labels = idx // num_classes, idx % num_classes
        boxes = decode(box[0][anchor_idx], anchors[anchor_idx]).clamp(min=0)
        boxes = torch.minimum(boxes, image_hw.flip(0).repeat(2))  # x <= width, y <= height
        scores = logits.sigmoid()
        keep = (scores > self.score_threshold) & has_area(boxes)  # as postprocess: no box squeezed to a line
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        # per-class NMS in one call, torchvision's coordinate trick written out: classes are moved apart by more
        # than the input size. torchvision's batched_nms exports it inside an If ("no boxes"), whose branches
        # NNCF quantizes and compiles separately (3x the int8 export time) -- the If adds nothing here.
        shifted = boxes + (labels.to(boxes.dtype) * (max(self.height, self.width) + 1))[:, None]
        keep = nms(shifted, scores, self.iou_threshold)[: self.max_detections]
        return boxes[keep], scores[keep], labels[keep]
