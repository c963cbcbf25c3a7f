"""Classification metrics: top-1/top-5/loss/per-class over a loader, and "precise BN" recalibration."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data import ImageSamples, eval_transform
from ..errors import DataError
from ..models.config import ModelConfig


@dataclass
class EvalResult:
    top1: float
    top5: float
    loss: float
    images: int
    seconds: float
    per_class: list[dict[str, Any]]

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader, batches: int, channels_last: bool = False) -> None:
    """"Precise BN": replace BatchNorm running statistics by their plain average over ``batches`` training
    batches. After a short run the exponential running averages still carry early-training statistics, and
    eval-mode accuracy can sit at chance while train accuracy climbs (as NAS methods do before evaluating)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
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


@torch.inference_mode()
def evaluate(model: nn.Module, loader, class_names: list[str], amp: bool = False,
             channels_last: bool = False) -> EvalResult:
    """Top-1/top-5 (%), mean cross-entropy and per-class top-1 over ``loader``."""
    model.eval()
    n_cls = len(class_names)
    correct = torch.zeros(n_cls, dtype=torch.long)
    total = torch.zeros(n_cls, dtype=torch.long)
    top5 = 0
    loss_sum = 0.0
    start = time.perf_counter()
    for x, y in loader:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hit1 = topk[:, 0] == y
        top5 += (topk == y[:, None]).any(dim=1).sum().item()
        total += torch.bincount(y, minlength=n_cls)
        correct += torch.bincount(y[hit1], minlength=n_cls)
    seconds = time.perf_counter() - start
    n = int(total.sum())
    if n == 0:
        raise DataError("evaluation set is empty")
    per_class = [dict(name=name, images=int(t), top1=100.0 * int(c) / int(t) if t else float("nan"))
                 for name, c, t in zip(class_names, correct.tolist(), total.tolist())]
    return EvalResult(100.0 * int(correct.sum()) / n, 100.0 * top5 / n, loss_sum / n, n, seconds, per_class)


def eval_loader(samples, config: ModelConfig, resolution: int, crop_pct: float, batch_size: int, workers: int):
    tf = eval_transform(config.replace(crop_pct=crop_pct), resolution)
    ds = ImageSamples(samples, tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       generator=torch.Generator())
