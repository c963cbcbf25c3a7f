"""A toy third task, written only against effnet's task interfaces: how bright is an image (its mean pixel value,
0..1)? One module (this one) plus one registration line (``effnet.tasks.register(TASK)``) make it trainable by
the shared loop, exportable through ``effnet.deploy`` with verification, and served over its own route
(``POST /brightness``) and the Open Inference Protocol. ``tests/test_toy_task.py`` checks each.

The target needs no labels (it is computed from the image), so any folder of real photos is a dataset.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from effnet.data import eval_transform, load_image
from effnet.deploy.engines import Engines, build_engines
from effnet.deploy.export import ExportOutputs, export_model
from effnet.deploy.options import Exported, ExportOptions
from effnet.taskspec import Route, RouteOption, TaskSpec
from effnet.train.recipes import Recipe
from effnet.train.task import StepResult


@dataclass(frozen=True)
class BrightnessConfig:
    """The toy model's config: what effnet's preprocessing, export and checkpoints read from any config."""

    name: str = "brightness_net"
    resolution: int = 32
    width: int = 8
    in_chans: int = 3
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    bn_momentum: float = 0.1

    def replace(self, **changes: Any) -> BrightnessConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


class BrightnessNet(nn.Module):
    def __init__(self, config: BrightnessConfig) -> None:
        super().__init__()
        self.config = config
        self.features = nn.Sequential(nn.Conv2d(config.in_chans, config.width, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(config.width), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(config.width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def brightness(x: torch.Tensor, config: BrightnessConfig) -> torch.Tensor:
    """The target of a normalised image: its mean pixel value in 0..1."""
    std, mean = torch.tensor(config.std).view(3, 1, 1), torch.tensor(config.mean).view(3, 1, 1)
    return (x * std + mean).mean()


class Photos(Dataset):
    def __init__(self, files: list[Path], config: BrightnessConfig) -> None:
        self.files, self.config, self.transform = files, config, eval_transform(config)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        x = self.transform(load_image(self.files[i])).contiguous()
        return x, brightness(x, self.config).reshape(1)


class BrightnessTask:
    """The training task (effnet.train.task.Task) of the toy."""

    name = "brightness regression"
    collate_fn = None
    frozen_children = ("head",)
    recipes = {"toy": Recipe("adamw", 1e-2, 8, 0.0, "constant", 0.0, 0.0, "none", 0.5, 0.0, 0.0)}

    def load_data(self, cfg, log) -> None:
        files = sorted(p for p in Path(cfg.data_dir).iterdir() if p.suffix == ".png")
        self.train_files, self.val_files = files[: max(1, len(files) - 2)], files[-2:]

    def build_model(self, cfg) -> nn.Module:
        self.config = BrightnessConfig(resolution=cfg.resolution or 32)
        return BrightnessNet(self.config)

    def train_dataset(self, model_config, recipe, seed: int) -> Dataset:
        return Photos(self.train_files, model_config)

    def criterion(self, recipe) -> nn.Module:
        return nn.MSELoss()

    def loss(self, model, batch, criterion, amp: bool, channels_last: bool) -> StepResult:
        x, y = batch
        out = model(x)
        loss = criterion(out, y)
        return StepResult(loss, len(x), {"abs_err": float((out - y).detach().abs().sum())})

    def train_metrics(self, acc: dict) -> dict:
        return {"train_mae": acc["abs_err"] / max(1, acc["seen"])}

    @torch.no_grad()
    def evaluate(self, model, amp: bool, channels_last: bool, prefix: str = "val", epoch: int | None = None) -> dict:
        x, y = next(iter(DataLoader(Photos(self.val_files, self.config), batch_size=len(self.val_files))))
        return {f"{prefix}_mae": float((model.eval()(x) - y).abs().mean())}

    def bn_loader(self, model, batch_size: int):
        return DataLoader(Photos(self.train_files, self.config), batch_size=batch_size)

    def describe(self) -> str:
        return f"{len(self.train_files)} photos ({len(self.val_files)} held out)"

    def log_line(self, row: dict, ema: bool) -> str:
        return f"val_mae {row['val_mae']:.4f}"

    def summary(self, last: dict) -> dict:
        return {"val_mae": last.get("val_mae")}

    def done_line(self, summary: dict, ema: bool) -> str:
        return f"val_mae {summary['val_mae']:.4f}"

    @staticmethod
    def plot(run_dir) -> Path:
        return plot_run(run_dir)


def plot_run(run_dir) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(Path(run_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots()
    ax.plot([int(r["epoch"]) for r in rows], [float(r["val_mae"]) for r in rows])
    out = Path(run_dir) / "curves.png"
    fig.savefig(out)
    plt.close(fig)
    return out


@dataclass
class ServedBrightness:
    """The toy behind effnet serve (effnet.deploy.engines.ServedModel)."""

    task: TaskSpec
    engines: Engines
    name: str
    backend: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        res = self.engines.first.config.resolution
        return 3, res, res

    def refuse_size(self, width: int, height: int) -> str | None:
        return None

    def preprocess(self, image: Image.Image, **options: Any) -> torch.Tensor:
        return eval_transform(self.engines.first.config)(image)

    def tensor_input(self, x: torch.Tensor, **options: Any) -> torch.Tensor:
        return x

    @torch.inference_mode()
    def run_batch(self, inputs: list[torch.Tensor]) -> list[float]:
        return torch.as_tensor(self.engines.get()(torch.stack(inputs))).reshape(-1).tolist()

    def answer(self, value: float, path: str | None = None, *, digits: int) -> dict:
        return {"path": path, "brightness": round(value, digits)}

    def output_metadata(self) -> list[tuple[str, str, list[int]]]:
        return [("brightness", "FP32", [-1])]

    def output_tensors(self, outputs: list[float], *, digits: int) -> dict[str, np.ndarray]:
        return {"brightness": np.round(np.array(outputs, np.float32), digits)}


def served(task: TaskSpec, model: nn.Module, backend: str, calibration, copies: int, threads) -> ServedBrightness:
    return ServedBrightness(task, Engines(build_engines(model, backend, calibration, copies, threads)),
                            model.config.name, backend)


def export(model: nn.Module, options: ExportOptions) -> Exported:
    r = export_model(model, options.output, options.format, resolution=options.resolution, int8=options.int8,
                     calibration=options.calibration, outputs=ExportOutputs("brightness", "brightness"))
    return Exported([f"wrote {r.path}; max |brightness diff| {r.max_abs_diff_random:.2e}"], r.as_dict())


def _result() -> type:
    from pydantic import BaseModel

    class Brightness(BaseModel):
        path: str | None = None
        brightness: float

    return Brightness


TASK = TaskSpec(
    name="brightness", noun="a brightness model", plural="brightness models", config_type=BrightnessConfig,
    trainer=BrightnessTask,
    route=Route("/brightness", "how bright each uploaded image is (0..1)", _result,
                (RouteOption("digits", int, 3, 0, 6, "decimal digits of the answer"),)),
    make_served=served, export=export,)
