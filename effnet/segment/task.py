"""Semantic segmentation as a task of the shared training loop (``effnet.train.loop.train``): images beside masks
in, a U-Net or FPN segmenter out. Checkpoints, resume, EMA, bf16, channels_last, DDP, the lean kernels and the
recipes are the loop's; the data, the model, the loss and the scores are this task's."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

from torch import nn

from ..data.masks import SegmentationSamples, load_segmentation
from ..errors import UsageError
from ..models.nets.segmenter_config import OUTPUT_STRIDE
from ..models.zoo.importers import load_weights
from ..models.zoo.registry import create_model, is_model_file, load_model, require_task
from ..train.config import TrainConfig
from ..train.metrics import plot_curves
from ..train.recipes import Recipe
from ..train.task import StepResult
from .evaluate import eval_loader, evaluate_segmenter, forward
from .loss import segmentation_loss

# Scale jitter of the training crops, relative to fitting the image's long side to the input (smp's examples and
# torchvision's reference scripts use 0.5-2.0)
SCALE_RANGE = (0.5, 2.0)


def initial_segmenter(cfg: TrainConfig, class_names: tuple[str, ...]) -> nn.Module:
    """The segmenter to train: architecture, starting weights (an effnet file, an smp checkpoint given as
    ``--weights``, or ImageNet weights for the encoder), and a head for the data's classes."""
    if cfg.weights and is_model_file(cfg.weights):  # an effnet file carries its architecture
        model = load_model(cfg.weights, task="segment").train()
    else:
        require_task(cfg.model, "segment")
        model = create_model(cfg.model, num_classes=len(class_names), pretrained_backbone=bool(cfg.pretrained),
                             drop_path_rate=cfg.drop_path_rate)
        if cfg.weights:
            load_weights(model, cfg.weights)
    if model.config.num_classes != len(class_names) or model.config.class_names != class_names:
        model.reset_head(len(class_names), class_names)
    return model


# what `effnet plot` draws for a segmentation run
PANELS = (("loss", ("train_loss", "train_ce", "train_dice")), ("mean IoU", ("val_mIoU", "ema_val_mIoU")),
          ("pixel accuracy", ("val_pixel_accuracy", "ema_val_pixel_accuracy")), ("learning rate (end of epoch)", ("lr",)))


def plot_segmentation_run(run_dir: str | os.PathLike) -> Path:
    """RUN_DIR/curves.png: training losses, val mIoU and pixel accuracy (and EMA's), the learning rate."""
    return plot_curves(run_dir, PANELS)


class SegmentationTask:
    """Segmentation for the loop (:class:`effnet.train.task.Task`: its docstrings say what each member does)."""

    name = "segmentation"
    collate_fn = None
    frozen_children = ("decoder", "segmentation_head")  # with --freeze-backbone, these keep training
    # A pretrained encoder and a new decoder: AdamW at 1e-3 for batch 8 with cosine decay (smp's examples train
    # with Adam at 1e-4..1e-3); no label smoothing, no EMA by default (runs this short gain nothing from it).
    recipes = MappingProxyType({"segment": Recipe("adamw", 1e-3, 8, 1e-4, "cosine", 1.0, 0.0, "none", 0.5, 0.5, 0.0)})

    def __init__(self, scale_range: tuple[float, float] = SCALE_RANGE) -> None:
        self.scale_range = scale_range

    def load_data(self, cfg: TrainConfig, log) -> None:
        self.train_split, self.val_split = load_segmentation(cfg.data_dir, log)

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        names = self.train_split.class_names
        model = initial_segmenter(cfg, names)
        self.resolution = cfg.resolution or model.config.resolution
        if self.resolution % OUTPUT_STRIDE:
            raise UsageError(f"--resolution must be a multiple of {OUTPUT_STRIDE} for a segmenter, got "
                             f"{self.resolution}")
        model.config = model.config.replace(resolution=self.resolution, class_names=names)
        self.eval_batch, self.workers = max(cfg.batch_size, 8), cfg.workers
        return model

    def train_dataset(self, model_config, recipe: Recipe, seed: int):
        return SegmentationSamples(self.train_split, model_config.mean, model_config.std, self.resolution, train=True,
                                   hflip=recipe.hflip, scale_range=self.scale_range, seed=seed)

    def criterion(self, recipe: Recipe):
        return functools.partial(segmentation_loss)

    def loss(self, model: nn.Module, batch, criterion, amp: bool, channels_last: bool) -> StepResult:
        x, target = batch
        total, ce, dice = criterion(forward(model, x, amp, channels_last), target)
        n = x.shape[0]
        return StepResult(total, n, {"ce": ce.detach().item() * n, "dice": dice.detach().item() * n})

    def train_metrics(self, acc: dict) -> dict[str, float]:
        seen = max(1, acc["seen"])
        return {"train_ce": acc.get("ce", 0.0) / seen, "train_dice": acc.get("dice", 0.0) / seen}

    def evaluate(self, model: nn.Module, amp: bool, channels_last: bool, prefix: str = "val",
                 epoch: int | None = None) -> dict[str, float]:
        res = evaluate_segmenter(model, self.val_split, self.resolution, self.eval_batch, self.workers, amp,
                                 channels_last)
        return {f"{prefix}_mIoU": res["mIoU"], f"{prefix}_pixel_accuracy": res["pixel_accuracy"]}

    def bn_loader(self, model: nn.Module, batch_size: int):
        """Training images without augmentation, for "precise BN"."""
        return eval_loader(self.train_split, model.config, self.resolution, batch_size, self.workers)

    def describe(self) -> str:
        t, v = self.train_split, self.val_split
        return (f"{len(t.samples)} images / {len(t.class_names)} classes at {self.resolution}px; val {len(v.samples)}"
                + (f"; {len(t.skipped) + len(v.skipped)} skipped" if t.skipped or v.skipped else ""))

    def log_line(self, row: dict[str, Any], ema: bool) -> str:
        ema_txt = f", EMA mIoU {row['ema_val_mIoU']:.3f}" if ema else ""
        return (f"train loss {row['train_loss']:.4f} (CE {row['train_ce']:.4f}, Dice {row['train_dice']:.4f}), "
                f"val mIoU {row['val_mIoU']:.3f} pixel acc {row['val_pixel_accuracy']:.3f}{ema_txt}")

    def summary(self, last: dict[str, Any]) -> dict[str, Any]:
        t, v = self.train_split, self.val_split
        return dict(images_train=len(t.samples), images_val=len(v.samples), classes=len(t.class_names),
                    skipped=len(t.skipped) + len(v.skipped), val_mIoU=last.get("val_mIoU"),
                    val_pixel_accuracy=last.get("val_pixel_accuracy"), ema_val_mIoU=last.get("ema_val_mIoU"))

    def done_line(self, summary: dict[str, Any], ema: bool) -> str:
        ema_txt = f", EMA mIoU {summary['ema_val_mIoU']:.3f}" if ema and summary.get("ema_val_mIoU") is not None else ""
        return (f"val mIoU {summary['val_mIoU']:.3f}, pixel accuracy {summary['val_pixel_accuracy']:.3f}{ema_txt}; "
                f"{summary['skipped']} sample(s) skipped")

    plot = staticmethod(plot_segmentation_run)
