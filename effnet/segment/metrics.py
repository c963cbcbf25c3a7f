"""Scoring masks: one confusion matrix per evaluation, and mean IoU, per-class IoU and pixel accuracy read from it.

A confusion matrix is summed batch by batch (pixels labelled ``IGNORE_INDEX`` are left out), so a whole val set is
scored in one pass whatever its size; the numbers equal torchmetrics' ``JaccardIndex(average="macro")`` /
``MulticlassAccuracy(average="micro")`` (tests/test_segment.py checks them against it). Mean IoU is over the
classes that occur in the ground truth or the predictions (a class absent from both has no IoU), as torchmetrics
and the VOC / Cityscapes evaluations count it.
"""

from __future__ import annotations

import torch

from ..data.masks import IGNORE_INDEX


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts: rows the true class, columns the predicted one."""
    keep = target != IGNORE_INDEX
    index = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(matrix: torch.Tensor, class_names: tuple[str, ...]) -> dict:
    """mIoU, pixel accuracy and per-class IoU (None for a class in neither truth nor prediction), as fractions."""
    m = matrix.double()
    tp = m.diag()
    union = m.sum(0) + m.sum(1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    total = m.sum()
    return {"mIoU": float(iou[present].mean()) if present.any() else 0.0,
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else 0.0,
            "per_class_iou": {name: (float(v) if p else None) for name, v, p in zip(class_names, iou, present)},
            "pixels": int(total)}
