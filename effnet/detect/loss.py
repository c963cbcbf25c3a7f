"""EfficientDet's training loss (paper section 4 / official det_model_fn): focal loss on the classes
(torchvision's ``sigmoid_focal_loss``, alpha 0.25, gamma 1.5) + 50 x Huber (delta 0.1) on the box codes of
positive anchors, both normalised by the number of positive anchors in the batch (+1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from .boxes import anchors_for, flatten_outputs, label_anchors


@dataclass(frozen=True)
class LossConfig:
    alpha: float = 0.25
    gamma: float = 1.5
    delta: float = 0.1
    box_loss_weight: float = 50.0
    label_smoothing: float = 0.0


def build_targets(anchors: torch.Tensor, targets: list[dict], num_classes: int):
    """Per-anchor one-hot class targets (N, total, C), box codes (N, total, 4) and the positive mask."""
    cls_t, box_t, pos_t = [], [], []
    for t in targets:
        matched, codes = label_anchors(anchors, t["boxes"].float(), t["labels"])
        onehot = torch.zeros(anchors.shape[0], num_classes)
        pos = matched >= 0
        onehot[pos, t["labels"][matched[pos]]] = 1.0
        cls_t.append(onehot)
        box_t.append(codes)
        pos_t.append(pos)
    return torch.stack(cls_t), torch.stack(box_t), torch.stack(pos_t)


def detection_loss(class_out: list[torch.Tensor], box_out: list[torch.Tensor], targets: list[dict],
                   config, image_size: tuple[int, int], loss: LossConfig = LossConfig()):
    """(total, class loss, box loss) for a batch; ``targets`` hold ``boxes`` (xyxy input pixels), ``labels``."""
    num_classes = config.num_classes
    cls, box = flatten_outputs(class_out, box_out, num_classes)
    anchors = anchors_for(config, *image_size)
    cls_t, box_t, pos = build_targets(anchors, targets, num_classes)
    normalizer = pos.sum().float() + 1.0
    if loss.label_smoothing > 0:
        cls_t = cls_t * (1 - loss.label_smoothing) + 0.5 * loss.label_smoothing
    class_loss = sigmoid_focal_loss(cls.float(), cls_t, alpha=loss.alpha, gamma=loss.gamma, reduction="sum")
    class_loss = class_loss / normalizer
    box_loss = F.huber_loss(box[pos].float(), box_t[pos], delta=loss.delta, reduction="sum") / (normalizer * 4)
    return class_loss + loss.box_loss_weight * box_loss, class_loss, box_loss
