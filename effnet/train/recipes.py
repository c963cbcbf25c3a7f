"""Training recipes: the named presets (the paper's, fine-tuning) and the optimizers and schedules they use.

``RMSpropTF`` is hand-written because ``torch.optim.RMSprop`` differs from TensorFlow's RMSProp, which the
paper used (decay 0.9, momentum 0.9, epsilon 1e-3): TF adds epsilon *inside* the square root, starts the
mean-square accumulator at 1 (not 0), and folds the learning rate into the momentum buffer. With
epsilon 1e-3 these differences change training; everything else here comes from torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR, StepLR

from ..errors import UsageError


@dataclass(frozen=True)
class Recipe:
    """Optimisation + regularisation defaults. ``lr`` is for a global batch of ``ref_batch`` (linear scaling)."""

    optimizer: str
    lr: float
    ref_batch: int
    weight_decay: float
    schedule: str
    warmup_epochs: float
    label_smoothing: float
    auto_augment: str
    rrc_scale_min: float
    hflip: float
    ema_decay: float


# the recipes every task may use; a task adds its own (its training task's ``recipes``: detection's "detect")
RECIPES: dict[str, Recipe] = {
    # Paper section 5.2: RMSProp (decay 0.9, momentum 0.9), lr 0.256 per 4096 images, warmup 5 epochs, decay
    # 0.97 every 2.4 epochs, weight decay 1e-5, AutoAugment, label smoothing 0.1, EMA 0.9999.
    "paper": Recipe("rmsprop", 0.256, 4096, 1e-5, "exp", 5.0, 0.1, "autoaugment", 0.08, 0.5, 0.9999),
    # Fine-tuning pretrained weights: AdamW + cosine, milder crops, no AutoAugment.
    "finetune": Recipe("adamw", 2e-3, 32, 1e-5, "cosine", 1.0, 0.1, "none", 0.35, 0.5, 0.9999),
}


class RMSpropTF(Optimizer):
    """TensorFlow-style RMSProp (tf.compat.v1.train.RMSPropOptimizer semantics).

    ms  <- rho * ms + (1 - rho) * g^2          (ms starts at 1)
    mom <- momentum * mom + lr * g / sqrt(ms + eps)
    p   <- p - mom
    Weight decay is L2 added to the gradient, as TF adds it to the loss.
    """

    def __init__(self, params, lr: float = 0.016, rho: float = 0.9, momentum: float = 0.9, eps: float = 1e-3,
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or eps < 0 or not 0 <= rho < 1 or momentum < 0:
            raise ValueError("invalid RMSpropTF hyper-parameter")
        super().__init__(params, dict(lr=lr, rho=rho, momentum=momentum, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                square_avg, buf = state["square_avg"], state["momentum_buffer"]
                square_avg.mul_(group["rho"]).addcmul_(grad, grad, value=1 - group["rho"])
                denom = square_avg.add(group["eps"]).sqrt_()
                buf.mul_(group["momentum"]).addcdiv_(grad, denom, value=group["lr"])
                p.sub_(buf)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only, not on BatchNorm parameters or biases (ndim <= 1)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9) -> Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "rmsprop":
        return RMSpropTF(groups, lr=lr, rho=0.9, momentum=momentum, eps=1e-3)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    raise UsageError(f"unknown optimizer {name!r} (rmsprop, adamw, sgd)")


def build_scheduler(optimizer: Optimizer, schedule: str, total_steps: int, steps_per_epoch: int,
                    warmup_steps: int, decay_rate: float = 0.97, decay_epochs: float = 2.4) -> LRScheduler:
    """Linear warmup, then the paper's staircase exponential decay (x0.97 every 2.4 epochs) or cosine.

    Stepped once per optimizer step.
    """
    if schedule == "exp":
        after = StepLR(optimizer, step_size=max(1, round(decay_epochs * steps_per_epoch)), gamma=decay_rate)
    elif schedule == "cosine":
        after = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps))
    elif schedule == "constant":
        after = StepLR(optimizer, step_size=max(1, total_steps), gamma=1.0)
    else:
        raise UsageError(f"unknown schedule {schedule!r} (exp, cosine, constant)")
    if warmup_steps <= 0:
        return after
    warmup = LinearLR(optimizer, start_factor=1.0 / (warmup_steps + 1), end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, after], milestones=[warmup_steps])


def ema_decay_for_run(decay: float, total_steps: int) -> float:
    """Shorten the EMA horizon (1 / (1 - decay) steps) to at most a tenth of a short run."""
    if total_steps <= 0:
        return decay
    return min(decay, max(0.0, 1.0 - 10.0 / total_steps))


def bn_momentum_for_run(momentum: float, total_steps: int) -> float:
    """BatchNorm running statistics (torch momentum; TF decay = 1 - momentum) must settle within a run:
    the paper's 0.01 (TF 0.99) averages over ~100 steps, too slow for a run of a few hundred steps, so the
    averaging horizon is capped at a tenth of the run (momentum at most 0.1, PyTorch's default)."""
    if total_steps <= 0:
        return momentum
    return max(momentum, min(0.1, 10.0 / total_steps))


def ema_multi_avg_fn(decay: float):
    """EMA for ``torch.optim.swa_utils.AveragedModel`` with TF's warm-up: decay_t = min(decay, (1+t)/(10+t))."""

    @torch.no_grad()
    def update(ema_params, model_params, num_averaged) -> None:
        n = int(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        for e, m in zip(ema_params, model_params):
            if torch.is_floating_point(e):
                e.lerp_(m, 1.0 - d)
            else:
                e.copy_(m)

    return update


def warmup_steps_for(warmup_epochs: float, epochs: int, steps_per_epoch: int) -> int:
    """Warmup in steps, capped at 20% of the run so that short runs still decay."""
    return int(math.floor(min(warmup_epochs, 0.2 * epochs) * steps_per_epoch))
