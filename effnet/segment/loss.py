"""The training loss: cross-entropy plus multiclass Dice (Milletari et al. 2016), both leaving out ``IGNORE_INDEX``.

Cross-entropy alone is dominated by the background in sets where objects are small (segment-digits: ~90% of the
pixels); the soft Dice term weighs every class present in the batch equally, as smp's ``DiceLoss(mode="multiclass")``
does (classes absent from the batch's ground truth are left out of its mean, smp's default)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.masks import IGNORE_INDEX

DICE_WEIGHT = 1.0  # CE + 1.0 x Dice, the usual "CE + Dice" of the smp / nnU-Net recipes
SMOOTH = 1e-6


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice, averaged over the classes present in ``target``."""
    num_classes = logits.shape[1]
    keep = (target != IGNORE_INDEX).unsqueeze(1)
    probs = logits.float().softmax(1) * keep
    onehot = F.one_hot(target.clamp(max=num_classes - 1) * keep.squeeze(1), num_classes).permute(0, 3, 1, 2) * keep
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    card = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + SMOOTH) / (card + SMOOTH)
    present = onehot.sum(dims) > 0
    return (1 - dice[present]).mean() if present.any() else logits.sum() * 0


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = DICE_WEIGHT):
    """(total, cross-entropy, Dice) for a batch of logits (N, C, H, W) and masks (N, H, W)."""
    ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
    dice = dice_loss(logits, target) if dice_weight else ce.new_zeros(())
    return ce + dice_weight * dice, ce, dice
