""""Precise BN" (the loop runs it before a run's last evaluation; the grid search before every evaluation)."""

from __future__ import annotations

import torch
from torch import nn

from ..models.nets.layers import BATCHNORMS


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader, batches: int, channels_last: bool = False) -> None:
    """Replace BatchNorm running statistics by their plain average over ``batches`` training batches ``(x, _)``.
    After a short run the exponential running averages still carry early-training statistics, and eval-mode
    accuracy can sit at chance while train accuracy climbs (as NAS methods do before evaluating)."""
    bns = [m for m in model.modules() if isinstance(m, BATCHNORMS)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    model.train(was_training)
