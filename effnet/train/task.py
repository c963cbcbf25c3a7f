"""What the one training loop asks of a task: the :class:`Task` protocol, and what it tells the task and the caller.

The loop (``loop.py``) owns optimisation, checkpoints, resume, EMA, DDP, logging and the time budget; a task owns its
data, its model, its loss and its metrics. Classification (``effnet.classify.ClassificationTask``) and detection
(``effnet.detect.DetectionTask``) are the two tasks; :func:`check_task` is how the loop refuses anything else with
one line naming what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import UsageError
from .config import TrainConfig
from .recipes import Recipe


@dataclass(frozen=True)
class StepResult:
    """One training step's loss, the number of examples it saw, and statistics to sum over the epoch."""

    loss: torch.Tensor
    examples: int
    stats: dict[str, float]


@dataclass(frozen=True)
class EpochEnd:
    """What the loop tells ``train(on_epoch_end=...)`` after each evaluated epoch (on rank 0)."""

    epoch: int  # 1-based number of the epoch that just ended
    epochs: int  # the run's planned epochs
    complete: bool  # False when the time budget cut this epoch short
    global_step: int
    steps_per_epoch: int
    row: dict[str, Any]  # the metrics row written to metrics.csv


@runtime_checkable
class Task(Protocol):
    """A task of the shared training loop. The loop calls, in order: ``load_data``, ``build_model``,
    ``train_dataset``, ``criterion``; each step ``loss``; each epoch ``train_metrics``, ``evaluate`` (model and EMA),
    ``log_line``; at the end ``bn_loader`` (precise BN), ``summary``, ``done_line`` and ``plot``. A task that can
    train progressively (``--progressive``) also has ``begin_stage``, called before every epoch
    (:class:`effnet.train.progressive.ProgressiveTask`); the loop refuses ``--progressive`` for one without."""

    name: str  # "classification", "detection": what the log says is being trained
    collate_fn: Callable | None  # the DataLoader's collate function (None: PyTorch's default)
    frozen_children: tuple[str, ...]  # with --freeze-backbone, the model's children that keep training
    recipes: Mapping[str, Recipe]  # the task's own named recipes, beside the shared ones (train.recipes.RECIPES)

    def load_data(self, cfg: TrainConfig, log: Callable[..., None]) -> None:
        """Read the dataset (``cfg.data_dir``); called once, before ``build_model``."""

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        """The model to train (architecture, starting weights, head for the data's classes); its ``config`` is
        saved with the weights, so it must record the preprocessing the model is trained with."""

    def train_dataset(self, model_config: Any, recipe: Recipe, seed: int) -> torch.utils.data.Dataset:
        """The augmented training set (the loop shards it across processes)."""

    def criterion(self, recipe: Recipe) -> Callable:
        """The loss function for this recipe, handed back to ``loss`` on every step."""

    def loss(self, model: nn.Module, batch: Any, criterion: Callable, amp: bool, channels_last: bool) -> StepResult:
        """Forward one batch through ``model`` (possibly wrapped in DDP / torch.compile) and return its loss."""

    def train_metrics(self, acc: dict[str, float]) -> dict[str, float]:
        """Epoch training metrics from the summed ``StepResult.stats`` (``acc["seen"]``: examples seen)."""

    def evaluate(self, model: nn.Module, amp: bool, channels_last: bool, prefix: str = "val",
                 epoch: int | None = None) -> dict[str, float]:
        """Validation metrics named ``{prefix}_*`` after ``epoch`` (1-based; the loop always says which)."""

    def bn_loader(self, model: nn.Module, batch_size: int) -> Any:
        """Un-augmented training batches ``(x, target)`` for "precise BN"."""

    def describe(self) -> str:
        """One line on the data, for the run's first log line."""

    def log_line(self, row: dict[str, Any], ema: bool) -> str:
        """One line on an epoch's metrics row."""

    def summary(self, last: dict[str, Any]) -> dict[str, Any]:
        """The task's part of summary.json, from the last metrics row."""

    def done_line(self, summary: dict[str, Any], ema: bool) -> str:
        """One line on the finished run."""

    def plot(self, run_dir: Path) -> Path:
        """Draw RUN_DIR/curves.png from metrics.csv; returns its path."""


def check_task(task: Any) -> Task:
    """``task`` if it has every member of :class:`Task`, else one error naming what it lacks."""
    if task is None:
        raise UsageError("train() needs a task: effnet.classify.ClassificationTask(), effnet.detect.DetectionTask() "
                         "or another task's trainer (effnet.tasks)")
    members = [name for name in Task.__annotations__] + [
        name for name, value in vars(Task).items() if callable(value) and not name.startswith("_")]
    missing = [name for name in members if not hasattr(task, name)]
    if missing:
        raise UsageError(f"{type(task).__name__} is not a training task: it lacks {', '.join(missing)} "
                         "(see effnet.train.task.Task)")
    return task
