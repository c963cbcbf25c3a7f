"""Progressive learning with adaptive regularization: Algorithm 1 of EfficientNetV2 (Tan & Le, "EfficientNetV2:
Smaller Models and Faster Training", ICML 2021, section 4.2), for any model of any task that can change its image
size and regularization between epochs (:class:`ProgressiveTask`; classification can, detection cannot).

Training is divided into M stages (the paper: four, "about 87 epochs per stage" of 350, section 5.1). In stage i
(0-based) the image size and each regularization magnitude go linearly from their start to their end value:

    S_i = S_0 + (S_e - S_0) * i / (M - 1),    phi_i^k = phi_0^k + (phi_e^k - phi_0^k) * i / (M - 1)

so the first stage trains small images weakly regularized and the last the full size with the strongest
regularization. The regularizations are the paper's three: the classifier head's dropout rate, the RandAugment
magnitude (the paper's TensorFlow scale, on which 10 is each operation's strongest; the task converts it to
torchvision's) and the mixup alpha (0: no mixup). Sizes and magnitudes are rounded to the nearest whole number.

Epochs are split evenly into stages as the official code does (google/automl ``efficientnetv2/main_tf2.py``: stage i
runs epochs ``int(i / M * E)`` up to ``int((i + 1) / M * E)``): a remainder falls one extra epoch to a stage
spread over the run (10 epochs in 4 stages: 2, 3, 2, 3). A run shorter than M epochs has one stage per epoch, so it
still goes from the start values to the end ones. One stage (M = 1) trains at the end values throughout.

The schedule is a pure function of the epoch: a resumed run recomputes its stage from the epoch it resumes in.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import UsageError
from .config import TrainConfig


@dataclass(frozen=True)
class Progression:
    """The (start, end) of the image size and of each regularization: a row of the paper's Table 6."""

    size: tuple[int, int]
    randaug: tuple[int, int]  # RandAugment magnitude, TensorFlow's scale (data.images.torchvision_magnitude)
    mixup: tuple[float, float]  # mixup alpha; 0 = no mixup
    dropout: tuple[float, float]  # the classifier head's dropout rate


# Table 6, "progressive training settings for EfficientNetV2" (min -> max over the stages). The official code's
# effnetv2_configs.py ends M and L at 384 px with slightly different magnitudes; the paper's table is the source here.
TABLE_6: dict[str, Progression] = {
    "S": Progression((128, 300), (5, 15), (0.0, 0.0), (0.1, 0.3)),
    "M": Progression((128, 380), (5, 20), (0.0, 0.2), (0.1, 0.4)),
    "L": Progression((128, 380), (5, 25), (0.0, 0.4), (0.1, 0.5)),
}
# The row a model trains with: V2-M its own, V2-L and V2-XL L's (Table 6 has no XL row; XL is trained as L). Every
# other model takes S's row ending at its own training size (config.train_resolution, else its resolution), from
# min(128, that size).
ROW_OF_MODEL: dict[str, str] = {"efficientnetv2_m": "M", "efficientnetv2_l": "L", "efficientnetv2_xl": "L"}
DEFAULT_ROW = "S"
DEFAULT_STAGES = 4  # M of the paper


def default_progression(model_config: Any, resolution: int | None = None) -> tuple[str, Progression]:
    """(Table 6 row, its progression) for a model config. ``resolution``: the run's own training size when given
    (``--resolution`` or the dataset's hint); training then ends there whatever the row."""
    row = ROW_OF_MODEL.get(model_config.name, DEFAULT_ROW)
    progression = TABLE_6[row]
    if resolution is None and row == DEFAULT_ROW:
        resolution = model_config.train_resolution or model_config.resolution
    if resolution is not None:
        progression = dataclasses.replace(progression, size=(min(progression.size[0], resolution), resolution))
    return row, progression


def _nearest(x: float) -> int:
    return int(math.floor(x + 0.5))  # halves up, not Python's to-even


@dataclass(frozen=True)
class Stage:
    """Where epoch ``first_epoch`` .. ``last_epoch`` (0-based, inclusive) train: stage ``index`` (0-based) of
    ``stages``, at image size ``size`` with these regularization values."""

    index: int
    stages: int
    first_epoch: int
    last_epoch: int
    size: int
    randaug: int
    mixup: float
    dropout: float

    def metrics(self) -> dict[str, float]:
        """The per-epoch columns of metrics.csv (and TensorBoard)."""
        return dict(stage=self.index + 1, image_size=self.size, randaug=self.randaug, mixup=self.mixup,
                    dropout=self.dropout)

    def describe(self) -> str:
        epochs = (f"epoch {self.first_epoch + 1}" if self.first_epoch == self.last_epoch
                  else f"epochs {self.first_epoch + 1}-{self.last_epoch + 1}")
        return (f"stage {self.index + 1}/{self.stages} ({epochs}): "
                f"image size {self.size}px, RandAugment magnitude {self.randaug}, mixup alpha {self.mixup:g}, "
                f"dropout {self.dropout:g}")


@dataclass(frozen=True)
class Schedule:
    """Algorithm 1's schedule for a run of ``epochs`` epochs in ``stages`` stages."""

    progression: Progression
    stages: int
    epochs: int
    source: str  # where the values come from, for the log: "Table 6 row S", "... with --progressive-size ..."

    def epoch_range(self, index: int) -> tuple[int, int]:
        """Stage ``index``'s epochs: [first, end)."""
        return index * self.epochs // self.stages, (index + 1) * self.epochs // self.stages

    def at(self, epoch: int) -> Stage:
        """The stage epoch ``epoch`` (0-based) trains in."""
        if not 0 <= epoch < self.epochs:
            raise ValueError(f"epoch {epoch} is outside the run's 0..{self.epochs - 1}")
        index = next(i for i in range(self.stages) if epoch < self.epoch_range(i)[1])
        first, end = self.epoch_range(index)
        t = index / (self.stages - 1) if self.stages > 1 else 1.0
        p = self.progression

        def lerp(span: tuple[float, float]) -> float:
            return span[0] + (span[1] - span[0]) * t

        return Stage(index, self.stages, first, end - 1, _nearest(lerp(p.size)), _nearest(lerp(p.randaug)),
                     round(lerp(p.mixup), 6), round(lerp(p.dropout), 6))

    def describe(self) -> str:
        p = self.progression
        return (f"progressive learning (EfficientNetV2 Algorithm 1): {self.stages} stages over {self.epochs} epochs; "
                f"image size {p.size[0]}->{p.size[1]}px, RandAugment magnitude {p.randaug[0]}->{p.randaug[1]}, "
                f"mixup alpha {p.mixup[0]:g}->{p.mixup[1]:g}, dropout {p.dropout[0]:g}->{p.dropout[1]:g} "
                f"({self.source})")


SETTINGS = ("size", "randaug", "mixup", "dropout")  # TrainConfig.progressive_<setting> overrides the row's


def schedule_for(cfg: TrainConfig, model_config: Any) -> Schedule | None:
    """The run's schedule (None without ``--progressive``): the model's Table 6 row, each ``--progressive-*`` flag
    given over it, ``--progressive-stages`` stages (4) but no more than the run has epochs."""
    if not cfg.progressive:
        return None
    row, progression = default_progression(model_config, cfg.resolution)
    given = {k: tuple(getattr(cfg, f"progressive_{k}")) for k in SETTINGS
             if getattr(cfg, f"progressive_{k}") is not None}
    source = f"Table 6 row {row}" + ("".join(f", --progressive-{k} {v[0]:g}:{v[1]:g}" for k, v in given.items()))
    stages = min(cfg.progressive_stages or DEFAULT_STAGES, cfg.epochs)
    return Schedule(dataclasses.replace(progression, **given), stages, cfg.epochs, source)


@runtime_checkable
class ProgressiveTask(Protocol):
    """A task that trains progressively: the loop calls ``begin_stage`` at the start of every epoch."""

    def begin_stage(self, model: Any, recipe: Any, seed: int, stage: Stage) -> Any:
        """Apply the regularization the task owns for ``stage`` (the head's dropout on ``model``, mixup in its
        ``loss``) and return the training set at the stage's image size and RandAugment magnitude. A pure function
        of ``stage`` (and the seed): resuming in the middle of a stage calls it again."""


def check_progressive_task(task: Any) -> None:
    """One line refusing ``--progressive`` for a task without :class:`ProgressiveTask`'s ``begin_stage``."""
    if not callable(getattr(task, "begin_stage", None)):
        raise UsageError(f"--progressive: {task.name} training cannot change its image size and regularization per "
                         "stage (train without --progressive)")
