"""Image classification as a task of the shared training loop (:class:`effnet.train.task.Task`): an ImageFolder in,
an EfficientNet out. The loop owns optimisation, checkpoints, resume, EMA, DDP and logging; this task owns its data,
its model, its loss and its metrics. Detection (``effnet.detect.task``) is the other task.
"""

from __future__ import annotations

from types import MappingProxyType

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

from ..data import ImageSamples, load_splits, torchvision_magnitude, train_transform
from ..models.nets.config import ModelConfig
from ..models.nets.efficientnet import EfficientNet
from ..models.zoo.registry import create_model, is_model_file, load_model, require_task
from ..models.zoo.importers import load_weights
from ..train import loop
from ..train.config import TrainConfig
from ..train.metrics import plot_curves
from ..train.progressive import Stage
from ..train.recipes import Recipe
from ..train.task import StepResult
from .evaluate import eval_loader, evaluate

# what `effnet plot` draws for a classification run
PANELS = (("loss", ("train_loss", "val_loss")), ("top-1 %", ("train_top1", "val_top1", "ema_val_top1")),
          ("learning rate (end of epoch)", ("lr",)))


def plot_run(run_dir: str | os.PathLike) -> Path:
    """Write RUN_DIR/curves.png: loss, top-1 and learning rate per epoch."""
    return plot_curves(run_dir, PANELS)


def initial_model(cfg: TrainConfig, num_classes: int, class_names: tuple[str, ...]) -> nn.Module:
    """The model to train: architecture, starting weights, new head for the user's classes."""
    overrides = {k: v for k, v in (("drop_path_rate", cfg.drop_path_rate), ("dropout", cfg.dropout)) if v is not None}
    if cfg.weights and is_model_file(cfg.weights):  # our file carries its architecture
        source = load_model(cfg.weights, task="classify")
        model = EfficientNet(source.config.replace(**overrides))
        model.load_state_dict(source.state_dict())
    else:
        require_task(cfg.model, "classify")
        model = create_model(cfg.model, pretrained=cfg.pretrained, **overrides)
        if cfg.weights:
            load_weights(model, cfg.weights)
    if model.config.num_classes != num_classes or model.config.class_names != class_names:
        if cfg.pretrained or cfg.weights:
            model.reset_classifier(num_classes, class_names)  # transfer learning: new head
        else:
            model = EfficientNet(model.config.replace(num_classes=num_classes, class_names=class_names))
    return model


class ClassificationTask:
    """Classification for the loop (:class:`effnet.train.task.Task`: its docstrings say what each member does)."""

    name = "classification"
    collate_fn = None
    frozen_children = ("classifier",)  # with --freeze-backbone, these keep training
    recipes = MappingProxyType({})  # the shared recipes (paper, finetune) are classification's

    def __init__(self, model_config: ModelConfig | None = None) -> None:
        self.model_config = model_config  # in-process use (the grid search): replaces cfg.model
        self.mixup: v2.MixUp | None = None  # set per stage by progressive learning

    def load_data(self, cfg: TrainConfig, log) -> None:
        self.train_samples, self.val_samples, self.classes, self.skipped = load_splits(
            cfg.data_dir, cfg.val_split, cfg.seed, log)

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        class_names = tuple(self.classes)
        if self.model_config is not None:
            model = EfficientNet(self.model_config.replace(num_classes=len(class_names), class_names=class_names))
        else:
            model = initial_model(cfg, len(class_names), class_names)
        mcfg = model.config
        self.resolution = cfg.resolution or mcfg.resolution
        # EfficientNetV2 trains smaller than it evaluates (V2-S: 300 px, 384 px; official effnetv2_configs.py);
        # --resolution sets both
        self.train_resolution = cfg.resolution or mcfg.train_resolution or self.resolution
        self.crop_pct = cfg.crop_pct or (mcfg.crop_pct if cfg.resolution is None else 0.875)
        # the saved model carries the preprocessing it was trained with (predict/eval/export use it)
        model.config = mcfg.replace(resolution=self.resolution, crop_pct=self.crop_pct,
                                    train_resolution=None if cfg.resolution else mcfg.train_resolution)
        self.eval_batch, self.workers = max(cfg.batch_size, 64), cfg.workers
        return model

    def train_dataset(self, model_config: ModelConfig, recipe: Recipe, seed: int):
        tf = train_transform(model_config, self.train_resolution, recipe.auto_augment, recipe.rrc_scale_min,
                             recipe.hflip)
        return ImageSamples(self.train_samples, tf, seed=seed)

    def begin_stage(self, model: nn.Module, recipe: Recipe, seed: int, stage: Stage):
        """Progressive learning (:class:`effnet.train.progressive.ProgressiveTask`): the stage's head dropout and
        mixup alpha (0: none), and the training set cropped to its image size with RandAugment at its magnitude
        (the paper's TensorFlow scale, 0: none). Only ``stage`` decides them, so a run resumed in the middle of a
        stage trains as it would have."""
        model.dropout.p = stage.dropout
        self.mixup = v2.MixUp(alpha=stage.mixup, num_classes=len(self.classes)) if stage.mixup > 0 else None
        tf = train_transform(model.config, stage.size, "randaugment" if stage.randaug > 0 else "none",
                             recipe.rrc_scale_min, recipe.hflip, torchvision_magnitude(stage.randaug))
        return ImageSamples(self.train_samples, tf, seed=seed)

    def criterion(self, recipe: Recipe) -> nn.Module:
        # takes class indices or, under mixup, class probabilities; label smoothing mixes either with uniform
        return nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    def loss(self, model: nn.Module, batch, criterion, amp: bool, channels_last: bool) -> StepResult:
        x, y = batch
        target = y
        if self.mixup is not None:
            # batch-level mixup (Zhang et al. 2018) as in EfficientNetV2's progressive learning: each image blended
            # with its neighbour in the batch by one lambda ~ Beta(alpha, alpha) from the global generator (restored
            # on resume), the targets likewise as probabilities; top-1 still counts the image's own label
            x, target = self.mixup(x, y)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
            loss = criterion(logits.float(), target)
        return StepResult(loss, x.shape[0], {"correct": int((logits.argmax(1) == y).sum())})

    def train_metrics(self, acc: dict) -> dict[str, float]:
        return {"train_top1": 100.0 * acc.get("correct", 0) / max(1, acc["seen"])}

    def evaluate(self, model: nn.Module, amp: bool, channels_last: bool, prefix: str = "val",
                 epoch: int | None = None) -> dict[str, float]:
        if not hasattr(self, "_val_loader"):
            self._val_loader = eval_loader(self.val_samples, model.config, self.resolution, self.crop_pct,
                                           self.eval_batch, self.workers)
        res = evaluate(model, self._val_loader, self.classes, amp, channels_last)
        return {f"{prefix}_loss": res.loss, f"{prefix}_top1": res.top1, f"{prefix}_top5": res.top5}

    def bn_loader(self, model: nn.Module, batch_size: int):
        """Training images without augmentation, in a fixed random order, for "precise BN": the samples are
        sorted by class, and statistics from the first few batches would see only the first classes."""
        order = torch.randperm(len(self.train_samples), generator=torch.Generator().manual_seed(0)).tolist()
        samples = [self.train_samples[i] for i in order]
        return eval_loader(samples, model.config, self.resolution, self.crop_pct, batch_size, self.workers)

    def describe(self) -> str:
        return (f"{len(self.train_samples)} images / {len(self.classes)} classes at {self.resolution}px; "
                f"val {len(self.val_samples)}")

    def log_line(self, row: dict[str, Any], ema: bool) -> str:
        ema_txt = f", EMA top-1 {row['ema_val_top1']:.2f}%" if ema else ""
        return (f"train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.1f}%, val loss {row['val_loss']:.4f}, "
                f"top-1 {row['val_top1']:.2f}%, top-5 {row['val_top5']:.2f}%{ema_txt}")

    def summary(self, last: dict[str, Any]) -> dict[str, Any]:
        return dict(images_train=len(self.train_samples), images_val=len(self.val_samples), classes=len(self.classes),
                    skipped_files=len(self.skipped), val_top1=last.get("val_top1"), val_top5=last.get("val_top5"),
                    ema_val_top1=last.get("ema_val_top1"))

    def done_line(self, summary: dict[str, Any], ema: bool) -> str:
        return (f"val top-1 {summary['val_top1']:.2f}%" + (f", EMA {summary['ema_val_top1']:.2f}%" if ema else "")
                + f"; {len(self.skipped)} file(s) skipped")

    plot = staticmethod(plot_run)  # also `effnet plot` (effnet.tasks.plot), without a task instance


def train(cfg: TrainConfig, resume_dir: str | None = None, model_config: ModelConfig | None = None,
          on_epoch_end=None) -> dict:
    """The shared loop with classification (``effnet train``); ``model_config`` (in-process use, e.g. the grid
    search) replaces ``cfg.model``. See :func:`effnet.train.loop.train`."""
    return loop.train(cfg, resume_dir, ClassificationTask(model_config), on_epoch_end)
