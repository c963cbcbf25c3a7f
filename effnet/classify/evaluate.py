"""Evaluating a classifier: top-1/top-5/loss/per-class over a loader, with PyTorch or behind an exported inference
backend (``model_for_backend``: ONNX Runtime, OpenVINO, int8 calibrated on the training split)."""

from __future__ import annotations

import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ImageSamples, eval_transform, scan_image_folder
from ..deploy.predictors import at_resolution, with_backend
from ..errors import DataError
from ..models.nets.config import ModelConfig
from ..models.zoo.imagenet import imagenet_classes


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


def scan_for_model(folder: str | Path, config) -> tuple[list, list[str], list]:
    """An ImageFolder's samples labelled with the model's class indices, the model's class names, and the files
    skipped. The folders must be among the model's classes -- its own names, ImageNet's for a 1000-class model
    -- and may be a few of them (Imagenette's 10 of ImageNet's 1000); a model without names takes the folders in
    sorted order, as training did."""
    names = list(config.class_names or (imagenet_classes() if config.num_classes == 1000 else ()))
    if not names:
        return scan_image_folder(folder)
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")) \
        if os.path.isdir(folder) else []
    unknown = [f for f in found if f not in names]
    if unknown:
        raise DataError(f"{folder}: class folders {unknown[:5]} are not classes of the model (its classes: "
                        f"{', '.join(names[:5])}, ...)")
    samples, _, skipped = scan_image_folder(folder, found or None)
    index = {name: i for i, name in enumerate(names)}
    return [(path, index[found[i]]) for path, i in samples], names, skipped


def eval_loader(samples, config: ModelConfig, resolution: int, crop_pct: float, batch_size: int, workers: int):
    tf = eval_transform(config.replace(crop_pct=crop_pct), resolution)
    ds = ImageSamples(samples, tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       generator=torch.Generator())


def calibration_sample(data_dir: str | Path, count: int = 256, seed: int = 0) -> list[str]:
    """``count`` images drawn at random (fixed seed) from DATA_DIR/train: int8 calibration must see every class,
    and a folder scan is sorted by class."""
    train_dir = Path(data_dir) / "train"
    if not train_dir.is_dir():
        raise DataError(f"{data_dir}: no train/ folder to calibrate int8 on; give --calibration DIR")
    samples, _, _ = scan_image_folder(train_dir)
    paths = [path for path, _ in samples]
    random.Random(seed).shuffle(paths)
    return paths[:count]


def model_for_backend(model: nn.Module, backend: str, data_dir: str | Path, calibration: str | None = None,
                      resolution: int | None = None) -> nn.Module:
    """``model`` behind an inference ``backend`` (``effnet.deploy.BACKENDS``) for evaluation on DATA_DIR.

    ``torch`` is the model itself. Exported backends run at a fixed ``resolution`` (default the model's); an
    ``-int8`` backend calibrates on ``calibration`` or else on a random sample of DATA_DIR's training split, so
    that its accuracy is measured on the validation images it was not calibrated on.
    """
    if backend == "torch":
        return model
    at_resolution(model, resolution)  # the export's static input size
    if not backend.endswith("-int8") or calibration is not None:
        return with_backend(model, backend, calibration)
    with tempfile.TemporaryDirectory(prefix="effnet-calib-") as tmp:
        for i, path in enumerate(calibration_sample(data_dir)):
            os.symlink(os.path.abspath(path), os.path.join(tmp, f"{i:05d}{Path(path).suffix}"))
        return with_backend(model, backend, tmp)
