"""What a training run is: every setting of ``effnet train`` as one frozen dataclass (saved as args.json)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UsageError
from .recipes import RECIPES, Recipe


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str
    model: str = "efficientnet_b0"
    pretrained: bool = False
    weights: str | None = None
    epochs: int = 10
    batch_size: int = 32  # per process
    resolution: int | None = None
    lr: float | None = None  # absolute; None = recipe lr scaled by global batch
    freeze_backbone: bool = False
    out: str | None = None
    val_split: float = 0.1  # used when DATA_DIR has no val/ folder
    seed: int = 0
    recipe: str = "auto"  # auto = finetune when starting from weights, else paper
    optimizer: str | None = None
    schedule: str | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    auto_augment: str | None = None
    rrc_scale_min: float | None = None
    hflip: float | None = None
    ema_decay: float | None = None  # 0 disables EMA
    drop_path_rate: float | None = None
    dropout: float | None = None
    crop_pct: float | None = None
    amp: bool = False  # bfloat16 autocast
    channels_last: bool = False
    compile: bool = False
    workers: int = 0
    checkpoint_every: int = 0  # steps; 0 = only at epoch ends
    checkpoint: bool = True  # False: no checkpoint.pt (runs redone, not resumed: grid-search trials)
    sync_bn: bool = False
    memory_efficient: bool = False  # SiLU / SE gating that recompute instead of storing
    grad_checkpoint: bool = False  # per-block gradient checkpointing
    checkpoint_stages: int | None = None  # with grad_checkpoint: only the first N MBConv stages (None: all)
    budget_minutes: float | None = None  # stop training after this long (grid search budgets)
    plot: bool = True  # write curves.png at the end
    precise_bn: int = 0  # batches to recompute BatchNorm statistics with before the final evaluation
    dump_rank_weights: bool = False  # every rank writes its final weights (tests of DDP sync)
    quiet: bool = False

    def resolved_recipe(self) -> Recipe:
        name = self.recipe
        if name == "auto":
            name = "finetune" if (self.pretrained or self.weights) else "paper"
        if name not in RECIPES:
            raise UsageError(f"unknown recipe {name!r} (paper, finetune)")
        base = RECIPES[name]
        overrides = {f.name: getattr(self, f.name) for f in dataclasses.fields(Recipe)
                     if hasattr(self, f.name) and getattr(self, f.name) is not None}
        overrides.pop("lr", None)
        return dataclasses.replace(base, **overrides)
