"""Anchors, box coding, anchor labelling and detection post-processing (EfficientDet / RetinaNet).

Boxes are (x0, y0, x1, y1) in input pixels throughout. Box *codes* keep the official channel order
(ty, tx, th, tw) so that imported effdet/TF weights decode correctly. IoU and NMS come from torchvision;
the anchor grid and the code transform are hand-written because no library has EfficientDet's exact grid
(official anchors.py: centres at stride/2 + k*stride, size anchor_scale * stride * 2^(octave/scales)).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

# decoded sizes are clamped as torchvision's BoxCoder does, so an untrained head cannot overflow exp()
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def feature_sizes(height: int, width: int, max_level: int) -> list[tuple[int, int]]:
    """(H, W) at levels 0..max_level: each level halves the previous, rounding up (stride-2 SAME convs)."""
    sizes = [(height, width)]
    for _ in range(max_level):
        h, w = sizes[-1]
        sizes.append(((h - 1) // 2 + 1, (w - 1) // 2 + 1))
    return sizes


@functools.lru_cache(maxsize=16)
def _anchors(height: int, width: int, min_level: int, max_level: int, num_scales: int,
             aspect_ratios: tuple, anchor_scale: float) -> torch.Tensor:
    sizes = feature_sizes(height, width, max_level)
    out = []
    for level in range(min_level, max_level + 1):
        fh, fw = sizes[level]
        sy, sx = height / fh, width / fw
        ys = torch.arange(sy / 2, height, sy, dtype=torch.float64)[:fh]
        xs = torch.arange(sx / 2, width, sx, dtype=torch.float64)[:fw]
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        half = []
        for octave in range(num_scales):  # scale-major, then aspect: the output channel order
            for ax, ay in aspect_ratios:
                base = anchor_scale * 2 ** (octave / num_scales)
                half.append((base * sx * ax / 2, base * sy * ay / 2))
        half_t = torch.tensor(half, dtype=torch.float64)  # (A, 2)
        c = torch.stack([cx.reshape(-1), cy.reshape(-1)], 1)[:, None, :]  # (HW, 1, 2)
        out.append(torch.cat([c - half_t, c + half_t], dim=2).reshape(-1, 4))
    return torch.cat(out).float()


def anchors_for(config, height: int, width: int) -> torch.Tensor:
    """All anchors (num_anchors_total, 4) for an input of this size, in the order of the flattened outputs."""
    return _anchors(height, width, config.min_level, config.max_level, config.num_scales,
                    tuple(tuple(r) for r in config.aspect_ratios), float(config.anchor_scale))


def flatten_outputs(class_out: list[torch.Tensor], box_out: list[torch.Tensor], num_classes: int):
    """Per-level (N, A*C, H, W) / (N, A*4, H, W) -> (N, total, C) and (N, total, 4), anchor order."""
    n = class_out[0].shape[0]
    cls = torch.cat([c.permute(0, 2, 3, 1).reshape(n, -1, num_classes) for c in class_out], 1)
    box = torch.cat([b.permute(0, 2, 3, 1).reshape(n, -1, 4) for b in box_out], 1)
    return cls, box


def encode(boxes: torch.Tensor, anchors: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Faster R-CNN box codes (ty, tx, th, tw) of ``boxes`` relative to ``anchors`` (both xyxy)."""
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + wa / 2, anchors[:, 1] + ha / 2
    w, h = (boxes[:, 2] - boxes[:, 0]).clamp(min=eps), (boxes[:, 3] - boxes[:, 1]).clamp(min=eps)
    x, y = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    return torch.stack([(y - ya) / ha, (x - xa) / wa, torch.log(h / ha), torch.log(w / wa)], dim=-1)


def decode(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode`: codes (..., 4) + anchors (..., 4) -> boxes xyxy."""
    wa, ha = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    xa, ya = anchors[..., 0] + wa / 2, anchors[..., 1] + ha / 2
    ty, tx, th, tw = codes.unbind(-1)
    h = torch.exp(th.clamp(max=BBOX_XFORM_CLIP)) * ha
    w = torch.exp(tw.clamp(max=BBOX_XFORM_CLIP)) * wa
    y, x = ty * ha + ya, tx * wa + xa
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=-1)


def label_anchors(anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                  threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(matched gt index per anchor or -1, box codes per anchor) as the official ArgMaxMatcher: IoU >= 0.5
    is positive, everything else background, and every object keeps its best anchor even below 0.5."""
    matched = torch.full((anchors.shape[0],), -1, dtype=torch.long)
    codes = torch.zeros(anchors.shape[0], 4)
    if gt_boxes.numel() == 0:
        return matched, codes
    iou = box_iou(gt_boxes, anchors)  # (G, A)
    best_iou, best_gt = iou.max(dim=0)
    matched = torch.where(best_iou >= threshold, best_gt, matched)
    matched[iou.argmax(dim=1)] = torch.arange(gt_boxes.shape[0])  # force a match for every object
    pos = matched >= 0
    codes[pos] = encode(gt_boxes[matched[pos]], anchors[pos])
    return matched, codes


def has_area(boxes: torch.Tensor) -> torch.Tensor:
    """Which boxes (..., 4) xyxy enclose any area: a positive width and height. Clipping squeezes a box that lies
    wholly outside the image (past an edge, or in the letterbox padding below or right of it) to a line on the
    edge, which is no detection and draws as a stray line; every path that turns raw outputs into boxes drops
    those (:func:`postprocess`, :meth:`effnet.detect.pipeline.DetectionPipeline.graph`, the predictor's)."""
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


@dataclass
class Detections:
    """One image's detections: boxes (K, 4) xyxy in original-image pixels, scores (K,), labels (K,)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def postprocess(cls: torch.Tensor, box: torch.Tensor, anchors: torch.Tensor, image_size: tuple[int, int],
                scales: list[float] | None = None, max_candidates: int = 5000, iou_threshold: float = 0.5,
                max_detections: int = 100, score_threshold: float = 0.0,
                clip_sizes: list[tuple[float, float]] | None = None) -> list[Detections]:
    """Official post-processing: top-k (anchor, class) pairs by score, decode, clip (to the input, or to each
    image's own (height, width) in input pixels: ``clip_sizes``, as effdet), per-class NMS (torchvision
    ``batched_nms``), keep the best ``max_detections``; boxes divided by each image's resize ``scale``. Unlike
    effdet, boxes the clip left without area (:func:`has_area`) are dropped before NMS: a box of no area
    suppresses nothing (IoU 0), so the boxes kept are effdet's less those, and their slots go to the next best."""
    n, total, num_classes = cls.shape
    k = min(max_candidates, total * num_classes)
    scores_all, idx = cls.float().reshape(n, -1).topk(k, dim=1)
    out = []
    for i in range(n):
        anchor_idx, labels = idx[i] // num_classes, idx[i] % num_classes
        boxes = clip_boxes_to_image(decode(box[i, anchor_idx].float(), anchors[anchor_idx]),
                                    clip_sizes[i] if clip_sizes is not None else image_size)
        scores = scores_all[i].sigmoid()
        keep = (scores > score_threshold) & has_area(boxes)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, iou_threshold)[:max_detections]
        scale = scales[i] if scales is not None else 1.0
        out.append(Detections(boxes[keep] / scale, scores[keep], labels[keep]))
    return out
