"""One run of the search: a candidate's phi=1 model trained in the worker process, with the decoded images,
the splits and the imports of every earlier run reused, evaluated only at the epochs the pruner reads. The
training loop says which epoch ends, whether the deadline cut it, why the run stopped and how many whole
epochs it trained: nothing here counts or recomputes them."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ...classify.evaluate import eval_loader
from ...classify.task import ClassificationTask
from ...data import load_splits
from ...data.folders import decoded_images_kept, keep_decoded_images
from ...models.nets.config import ModelConfig
from ...train import EpochEnd, TrainConfig, recalibrate_bn, train

_SPLITS: dict[tuple, tuple] = {}  # (data_dir, val_split, seed) -> load_splits(...), once per worker process


def reuse_decoded_images() -> None:
    """Decode every image once per worker process: trials at 32 px otherwise spend as long decoding PNGs as
    training (a worker holds the whole data set; 2 GiB of pixels at most, the rest is decoded each time)."""
    if not decoded_images_kept():  # (again: would drop what this process decoded already)
        keep_decoded_images(2 << 30)


class Window(torch.utils.data.Dataset):
    """One unit of a plan in optimizer steps (``--min-steps``): ``length`` images of the training set. Window ``w``
    holds images ``w * length ...`` of one fixed random order of the whole set (wrapping round), so successive
    units walk through all of it, as epochs would; the loop's sampler shuffles inside a window."""

    def __init__(self, full: torch.utils.data.Dataset, length: int, seed: int) -> None:
        self.full, self.length, self.index = full, length, 0
        self.order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed)).tolist()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.full[self.order[(self.index * self.length + i) % len(self.order)]]


class SearchTask(ClassificationTask):
    """Classification as a search trial runs it. BatchNorm statistics are recomputed before every evaluation
    ("precise BN": after a few hundred steps the running averages still remember the first batches), from a
    random sample of the training set (not its first, one-class-sorted batches); epochs the pruner does not
    read are not evaluated (the loop says which epoch it evaluates). With ``unit_steps`` an "epoch" of the loop is
    a :class:`Window` of that many steps: the rungs fall inside real epochs."""

    def __init__(self, model_config: ModelConfig, eval_epochs: set[int], precise_bn: int,
                 unit_steps: int | None = None, deadline: float | None = None) -> None:
        super().__init__(model_config)
        self.eval_epochs, self.precise_bn, self.unit_steps = eval_epochs, precise_bn, unit_steps
        self.deadline = deadline  # unix time: past it an evaluation would end after the run's deadline
        self.window: Window | None = None

    def train_dataset(self, model_config: ModelConfig, recipe, seed: int):
        full = super().train_dataset(model_config, recipe, seed)
        if not self.unit_steps:
            return full
        self.window = Window(full, self.unit_steps * self.batch_size, seed)
        return self.window

    def build_model(self, cfg: TrainConfig):
        model = super().build_model(cfg)
        # a zero head (as for transfer learning): the official U(+-1/sqrt(classes)) dense init is sized for 1000
        # classes; with 10 it starts at loss ~3.5 (> ln 10, confidently wrong) and a run of a few epochs spends
        # its first one undoing that (digits, 3 epochs: 15% top-1 with it, 35% without)
        torch.nn.init.zeros_(model.classifier.weight)
        return model

    def load_data(self, cfg: TrainConfig, log) -> None:
        key = (str(Path(cfg.data_dir).resolve()), cfg.val_split, cfg.seed)
        if key not in _SPLITS:
            _SPLITS[key] = load_splits(cfg.data_dir, cfg.val_split, cfg.seed, log)
        self.train_samples, self.val_samples, self.classes, self.skipped = _SPLITS[key]
        self.batch_size = cfg.batch_size

    def evaluate(self, model, amp: bool, channels_last: bool, prefix: str = "val",
                 epoch: int | None = None) -> dict[str, float]:
        if self.window is not None and epoch is not None:  # called after every unit: the next one reads on
            self.window.index = epoch
        if epoch not in self.eval_epochs or (self.deadline is not None and time.time() >= self.deadline):
            return {f"{prefix}_loss": math.nan, f"{prefix}_top1": math.nan, f"{prefix}_top5": math.nan}
        if self.precise_bn > 0 and prefix == "val":
            recalibrate_bn(model, self.bn_loader(model, self.batch_size), self.precise_bn, channels_last)
        return super().evaluate(model, amp, channels_last, prefix, epoch)

    def bn_loader(self, model, batch_size: int):
        sample = random.Random(0).sample(self.train_samples, min(len(self.train_samples), self.precise_bn * batch_size))
        return eval_loader(sample, model.config, self.resolution, self.crop_pct, batch_size, self.workers)


@dataclass(frozen=True)
class RunSpec:
    """What one run trains: the model, where its files go, its seed, its epochs, the rungs at which it is asked
    whether to go on, and the unix time at which it must stop (None: no time budget)."""

    config: ModelConfig
    out: Path
    seed: int
    epochs: int
    rungs: list[int] = field(default_factory=list)
    deadline: float | None = None
    eval_reserve: float = 0.0  # seconds before the deadline at which training stops: a unit ending then is evaluated


@dataclass
class RunResult:
    summary: dict  # train()'s summary
    epochs: int  # whole epochs trained (and evaluated where the pruner reads)
    stopped_by: str | None  # "pruner", "time" (the budget), or None: ran to the end
    train_seconds: float  # in training epochs; the rest of the run's wall time is its overhead
    top1: float | None  # top-1 after ``epochs`` (None when cut for time before a whole evaluated epoch)


def train_run(s, spec: RunSpec, at_rung: Callable[[int, float], str | None] | None = None) -> RunResult:
    """Train ``spec.config`` for ``spec.epochs`` (``s``: the search settings). At each rung ``at_rung(epoch, top1)``
    says why to stop there ("pruner", "time") or None to go on. With a ``spec.deadline`` (unix time) the loop
    stops there even mid-epoch: the run then counts as cut for time at its last whole epoch."""
    state = dict(stopped_by=None, train_seconds=0.0, top1=None)
    cfg = spec.config

    def on_epoch_end(end: EpochEnd) -> bool:
        if not end.complete:  # the deadline cut this epoch short: the summary says so
            return True
        state["train_seconds"] += float(end.row["epoch_seconds"])
        top1 = float(end.row["val_top1"])
        if not math.isnan(top1):
            state["top1"] = top1
        why = at_rung(end.epoch, top1) if at_rung is not None and end.epoch in spec.rungs else None
        if why:
            state["stopped_by"] = why
            return True
        return False

    # the budget counts from this call (setup included); training stops early enough to evaluate its last unit,
    # and a run cut mid-unit is not evaluated (the deadline is past; it counts at its last whole unit anyway)
    budget = None if spec.deadline is None else max(0.01, (spec.deadline - spec.eval_reserve - time.time()) / 60)
    # channels-last: oneDNN's depthwise convolutions, 1.6x faster per step on this CPU at 32 px;
    # no checkpoint.pt: a killed trial is redone from its start, never resumed
    tcfg = TrainConfig(data_dir=s.data_dir, model=cfg.name, epochs=spec.epochs, batch_size=s.batch_size,
                       resolution=cfg.resolution, out=str(spec.out), seed=spec.seed, recipe=s.recipe, quiet=True,
                       precise_bn=0, plot=False, ema_decay=0.0, channels_last=True, checkpoint=False,
                       budget_minutes=budget)
    task = SearchTask(cfg, {*spec.rungs, spec.epochs}, s.precise_bn, s.min_steps, spec.deadline)
    summary = train(tcfg, task=task, on_epoch_end=on_epoch_end)
    epochs = int(summary["epochs_run"])
    stopped_by = state["stopped_by"]
    if stopped_by is None and summary["stop_reason"] == "budget" and epochs < spec.epochs:
        stopped_by = "time"  # the deadline struck, mid-epoch or in an epoch's last step
    return RunResult(summary, epochs, stopped_by, state["train_seconds"], state["top1"])
