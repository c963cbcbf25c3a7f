"""What a training run is: every setting of ``effnet train`` as one frozen dataclass (saved as args.json)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import UsageError
from .recipes import RECIPES, Recipe


# The numbers a run accepts: field -> (type, lowest, highest, whether the bounds themselves are allowed).
# One table checks flags, library calls and a resumed run's args.json alike, before anything is loaded or written.
NUMBER_BOUNDS: dict[str, tuple[type, float, float, bool]] = {
    "epochs": (int, 1, 100_000, True),
    "batch_size": (int, 1, 1 << 16, True),
    "resolution": (int, 4, 4096, True),
    "lr": (float, 0.0, math.inf, False),  # any finite rate above 0: a huge one is how divergence is tested
    "val_split": (float, 0.0, 1.0, False),
    "seed": (int, 0, 2**32 - 1, True),  # numpy's seed range
    "weight_decay": (float, 0.0, 10.0, True),
    "warmup_epochs": (float, 0.0, 100_000, True),
    "label_smoothing": (float, 0.0, 0.999, True),
    "rrc_scale_min": (float, 0.001, 1.0, True),
    "hflip": (float, 0.0, 1.0, True),
    "ema_decay": (float, 0.0, 0.999999, True),
    "drop_path_rate": (float, 0.0, 0.999, True),
    "dropout": (float, 0.0, 0.999, True),
    "crop_pct": (float, 0.01, 1.0, True),
    "workers": (int, 0, 256, True),
    "checkpoint_every": (int, 0, 1 << 40, True),
    "checkpoint_stages": (int, 1, 64, True),
    "budget_minutes": (float, 0.0, 1e7, False),
    "precise_bn": (int, 0, 1 << 20, True),
    "progressive_stages": (int, 1, 10_000, True),
    # flags of eval / predict only, checked by the same table (check_numbers)
    "topk": (int, 1, 100_000, True),
    "score_threshold": (float, 0.0, 1.0, True),
}


# RandAugment magnitudes are the paper's (TensorFlow's: 10 = each operation's strongest; torchvision's 30).
# Above 10 every operation stays at its strongest (effnet.data.images.torchvision_magnitude).
RANGE_BOUNDS: dict[str, tuple[type, float, float, bool]] = {
    "progressive_size": NUMBER_BOUNDS["resolution"],
    "progressive_randaug": (int, 0, 30, True),
    "progressive_mixup": (float, 0.0, 100.0, True),
    "progressive_dropout": NUMBER_BOUNDS["dropout"],
}


def _bound_problem(bounds: tuple[type, float, float, bool], value) -> str | None:
    """What ``value`` must be to lie in ``bounds`` (None: it does)."""
    kind, low, high, inclusive = bounds
    allowed = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        return "a whole number" if kind is int else "a number"
    if math.isfinite(value) and (low <= value <= high if inclusive else low < value < high):
        return None
    if math.isinf(high):
        return f"a finite number above {low:g}"
    return f"{low:g} to {high:g}" if inclusive else f"between {low:g} and {high:g} (exclusive)"


def number_problem(name: str, value) -> str | None:
    """Why ``value`` is not a valid setting ``name`` of :data:`NUMBER_BOUNDS` or :data:`RANGE_BOUNDS` (None: it is,
    or None itself)."""
    flag = "--" + name.replace("_", "-")
    if value is not None and name in RANGE_BOUNDS:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            return f"{flag} must be START:END, got {value!r}"
        wrong = [_bound_problem(RANGE_BOUNDS[name], v) for v in value]
        problem = next((w for w in wrong if w is not None), None)
        got = f"{value[0]!r}:{value[1]!r}"
        return None if problem is None else f"{flag} START and END must each be {problem}, got {got}"
    if value is None or name not in NUMBER_BOUNDS:
        return None
    problem = _bound_problem(NUMBER_BOUNDS[name], value)
    return None if problem is None else f"{flag} must be {problem}, got {value!r}"


def check_numbers(**values) -> None:
    """A :class:`UsageError` naming the first of ``values`` (setting name -> value) outside :data:`NUMBER_BOUNDS`:
    how ``eval`` and ``predict`` check their flags, before any model is loaded."""
    for name, value in values.items():
        problem = number_problem(name, value)
        if problem is not None:
            raise UsageError(problem)


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
    # EfficientNetV2's progressive learning (effnet.train.progressive): image size, RandAugment magnitude, mixup alpha
    # and head dropout go from START to END over the stages; None: the model's row of the paper's Table 6
    progressive: bool = False
    progressive_stages: int | None = None  # M (None: 4, the paper's)
    progressive_size: tuple[int, int] | None = None
    progressive_randaug: tuple[int, int] | None = None
    progressive_mixup: tuple[float, float] | None = None
    progressive_dropout: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data_dir, str) or not isinstance(self.model, str):
            raise UsageError(f"data_dir and model must be text, got {self.data_dir!r} and {self.model!r}")
        for f in dataclasses.fields(self):
            problem = number_problem(f.name, getattr(self, f.name))
            if problem is not None:
                raise UsageError(problem)
            if f.name in RANGE_BOUNDS and isinstance(getattr(self, f.name), list):  # read back from args.json
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        self._check_progressive()

    def _check_progressive(self) -> None:
        """The --progressive-* flags need --progressive, which schedules the head's dropout and RandAugment itself."""
        given = [f.name for f in dataclasses.fields(self)
                 if f.name.startswith("progressive_") and getattr(self, f.name) is not None]
        if given and not self.progressive:
            raise UsageError(f"--{given[0].replace('_', '-')} needs --progressive")
        for name, instead in (("dropout", "progressive_dropout"), ("auto_augment", "progressive_randaug")):
            if self.progressive and getattr(self, name) is not None:
                raise UsageError(f"--{name.replace('_', '-')} is scheduled per stage by --progressive: give "
                                 f"--{instead.replace('_', '-')} START:END instead")

    def resolved_recipe(self, task_recipes: Mapping[str, Recipe] = MappingProxyType({})) -> Recipe:
        """The named recipe (the shared ones or the task's own), with this run's explicit settings over it."""
        recipes = {**RECIPES, **task_recipes}
        name = self.recipe
        if name == "auto":
            name = "finetune" if (self.pretrained or self.weights) else "paper"
        if name not in recipes:
            raise UsageError(f"unknown recipe {name!r} ({', '.join(recipes)})")
        base = recipes[name]
        overrides = {f.name: getattr(self, f.name) for f in dataclasses.fields(Recipe)
                     if hasattr(self, f.name) and getattr(self, f.name) is not None}
        overrides.pop("lr", None)
        return dataclasses.replace(base, **overrides)
