"""Object detection as a task of the shared training loop (``effnet.train.loop.train``): COCO-layout data in,
an EfficientDet out. Checkpoints, resume, EMA, bf16, channels_last, DDP and recipes are the loop's."""

from __future__ import annotations

from types import MappingProxyType

import functools
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.coco import DetectionSamples, collate_detection, load_coco
from ..models.nets.efficientdet import EfficientDet
from ..models.zoo.registry import create_detector, create_model, is_model_file, load_model, require_task
from ..models.zoo.importers import load_weights
from ..train.config import TrainConfig
from ..train.metrics import plot_curves
from ..train.recipes import Recipe
from ..train.task import StepResult
from .evaluate import eval_loader, evaluate_detector
from .loss import LossConfig, detection_loss

# Scale jitter of the letterboxed image (official "random scale"; COCO recipes use 0.1-2.0, milder here for
# small sets trained for a few epochs): on detect-digits (12 epochs, 256 px) val AP50 0.211 with 0.8-1.25 vs
# 0.146 with 0.5-1.5 (at half size the smallest digits are 12 px).
SCALE_RANGE = (0.8, 1.25)
# Starting from pretrained weights, the stem and the first two backbone stages (strides 2 and 4) stay frozen
# and the backbone's BatchNorm keeps its ImageNet statistics: ~1.45x the training images/s on a CPU and no
# loss of accuracy on detect-digits (12 epochs at 256 px: val AP50 0.147, vs 0.141 for the old unfrozen run).
FREEZE_STAGES = 2
# ``TrainConfig.pretrained`` of ``effnet detect train --pretrained-backbone``: ImageNet backbone only
# (``--pretrained``, True, starts from the published COCO detector)
BACKBONE_ONLY = "backbone"


def initial_detector(cfg: TrainConfig, class_names: tuple[str, ...]) -> EfficientDet:
    """The detector to train: architecture, starting weights (COCO detector / pretrained backbone / a file), head
    for the classes. From COCO weights only the class net's output layer is new (effdet's and automl's recipe)."""
    if cfg.weights and is_model_file(cfg.weights):  # an effnet file carries its architecture
        model = load_model(cfg.weights, task="detect").train()
    elif cfg.pretrained and cfg.pretrained != BACKBONE_ONLY:
        require_task(cfg.model, "detect")
        return create_detector(cfg.model, len(class_names), pretrained=cfg.pretrained, class_names=class_names).train()
    else:
        require_task(cfg.model, "detect")
        model = create_model(cfg.model, num_classes=len(class_names), pretrained_backbone=bool(cfg.pretrained))
        if cfg.weights:
            load_weights(model, cfg.weights)
    if model.config.num_classes != len(class_names) or model.config.class_names != class_names:
        model.reset_head(len(class_names), class_names)
    return model


# what `effnet plot` draws for a detection run
PANELS = (("loss", ("train_loss", "train_cls_loss")), ("COCO AP", ("val_AP", "val_AP50", "ema_val_AP", "ema_val_AP50")),
          ("learning rate (end of epoch)", ("lr",)))


def plot_detection_run(run_dir: str | os.PathLike) -> Path:
    """RUN_DIR/curves.png: training losses, val AP / AP50 (and EMA's) and the learning rate per epoch."""
    return plot_curves(run_dir, PANELS)


class DetectionTask:
    """Detection for the loop (:class:`effnet.train.task.Task`: its docstrings say what each member does)."""

    name = "detection"
    frozen_children = ("fpn", "class_net", "box_net")  # with --freeze-backbone, these keep training
    # EfficientDet from a pretrained backbone (`effnet detect train`, which also freezes the stem + first two
    # stages and the backbone BN): AdamW at 1.2e-2 for batch 16 -- on detect-digits (6 epochs, 256 px) val AP50
    # 0.151 at 3e-3 and 6e-3, 0.174 at 1.2e-2; no EMA (no gain in runs this short, and it doubles the per-epoch
    # evaluation); label smoothing is unused (focal loss keeps hard targets).
    recipes = MappingProxyType({"detect": Recipe("adamw", 1.2e-2, 16, 1e-5, "cosine", 1.0, 0.0, "none", 0.35, 0.5, 0.0)})

    def __init__(self, scale_range: tuple[float, float] = SCALE_RANGE, freeze_stages: int | None = FREEZE_STAGES,
                 frozen_bn: bool = True, loss: LossConfig = LossConfig()) -> None:
        self.scale_range, self.freeze_stages, self.frozen_bn = scale_range, freeze_stages, frozen_bn
        self.loss_config = loss
        self.collate_fn = collate_detection

    def load_data(self, cfg: TrainConfig, log) -> None:
        self.train_split, self.val_split = load_coco(cfg.data_dir, log)

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        names = self.train_split.class_names
        model = initial_detector(cfg, names)
        self.resolution = cfg.resolution or model.config.resolution
        model.config = model.config.replace(resolution=self.resolution, class_names=names)
        self.config = model.config  # what the loss needs (anchors, classes), without unwrapping DDP
        if (cfg.pretrained or cfg.weights) and self.freeze_stages is not None and not cfg.freeze_backbone:
            model.freeze_early(self.freeze_stages, self.frozen_bn)
        self.eval_batch, self.workers = max(cfg.batch_size, 16), cfg.workers
        return model

    def train_dataset(self, model_config, recipe: Recipe, seed: int):
        return DetectionSamples(self.train_split, model_config.mean, model_config.std, self.resolution, train=True,
                                hflip=recipe.hflip, seed=seed, scale_range=self.scale_range)

    def criterion(self, recipe: Recipe):
        # the recipe's label smoothing is for softmax classifiers; the focal loss keeps hard targets (official)
        return functools.partial(detection_loss, config=self.config, loss=self.loss_config)

    def loss(self, model: nn.Module, batch, criterion, amp: bool, channels_last: bool) -> StepResult:
        x, targets = batch
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            class_out, box_out = model(x)
        total, cls_loss, box_loss = criterion(class_out, box_out, targets, image_size=tuple(x.shape[-2:]))
        n = x.shape[0]
        return StepResult(total, n, {"cls_loss": cls_loss.detach().item() * n, "box_loss": box_loss.detach().item() * n})

    def train_metrics(self, acc: dict) -> dict[str, float]:
        seen = max(1, acc["seen"])
        return {"train_cls_loss": acc.get("cls_loss", 0.0) / seen, "train_box_loss": acc.get("box_loss", 0.0) / seen}

    def evaluate(self, model: nn.Module, amp: bool, channels_last: bool, prefix: str = "val",
                 epoch: int | None = None) -> dict[str, float]:
        res = evaluate_detector(model, self.val_split, self.resolution, self.eval_batch, self.workers, amp,
                                channels_last)
        return {f"{prefix}_{k}": (res[k] if res[k] is not None else -1.0) for k in ("AP", "AP50", "AP75")}

    def bn_loader(self, model: nn.Module, batch_size: int):
        """Training images without augmentation, for "precise BN"."""
        return eval_loader(self.train_split, model.config, self.resolution, batch_size, self.workers)

    def describe(self) -> str:
        t, v = self.train_split, self.val_split
        boxes = sum(len(i.boxes) for i in t.images)
        return (f"{len(t.images)} images / {boxes} boxes / {len(t.categories)} classes at {self.resolution}px; "
                f"val {len(v.images)}")

    def log_line(self, row: dict[str, Any], ema: bool) -> str:
        ema_txt = f", EMA AP {row['ema_val_AP']:.3f} AP50 {row['ema_val_AP50']:.3f}" if ema else ""
        return (f"train loss {row['train_loss']:.4f} (class {row['train_cls_loss']:.4f}, box "
                f"{row['train_box_loss']:.5f}), val AP {row['val_AP']:.3f} AP50 {row['val_AP50']:.3f}{ema_txt}")

    def summary(self, last: dict[str, Any]) -> dict[str, Any]:
        t, v = self.train_split, self.val_split
        return dict(images_train=len(t.images), images_val=len(v.images), classes=len(t.categories),
                    skipped_images=len(t.skipped_images) + len(v.skipped_images),
                    skipped_annotations=len(t.skipped_annotations) + len(v.skipped_annotations),
                    val_AP=last.get("val_AP"), val_AP50=last.get("val_AP50"), ema_val_AP=last.get("ema_val_AP"),
                    ema_val_AP50=last.get("ema_val_AP50"))

    def done_line(self, summary: dict[str, Any], ema: bool) -> str:
        ema_txt = f", EMA AP {summary['ema_val_AP']:.3f} AP50 {summary['ema_val_AP50']:.3f}" if ema else ""
        return (f"val AP {summary['val_AP']:.3f} AP50 {summary['val_AP50']:.3f}{ema_txt}; "
                f"{summary['skipped_annotations']} annotation(s) and {summary['skipped_images']} image(s) skipped")

    plot = staticmethod(plot_detection_run)  # also `effnet plot` (effnet.tasks.plot), without a task instance
