"""Resumable training state: one ``checkpoint.pt`` with model, EMA, optimizer, scheduler, RNG states and the
position inside the epoch, written atomically and read back with ``weights_only=True``."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, TrainingDiverged
from ..files import atomic_write

CKPT_FORMAT = "effnet-train-checkpoint-v1"


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[float(v) for v in np_state[2:]]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


class TrainState:
    """The objects a checkpoint restores, and where the run stands (epoch, batch in epoch, global step)."""

    def __init__(self, model: nn.Module, optimizer, scheduler, ema, model_config_json: str) -> None:
        self.model, self.optimizer, self.scheduler, self.ema = model, optimizer, scheduler, ema
        self.model_config_json = model_config_json
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.epoch_acc: dict = {}

    def save(self, path: Path, epoch: int, batch_in_epoch: int) -> None:
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            # a finite loss can still leave inf/NaN weights behind: never overwrite the last good checkpoint
            raise TrainingDiverged(f"weights became non-finite at step {self.global_step}: training diverged (try "
                                   f"a lower --lr); last good checkpoint kept in {path}")
        state = {
            "format": CKPT_FORMAT, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": epoch, "batch_in_epoch": batch_in_epoch, "global_step": self.global_step,
            "epoch_acc": dict(self.epoch_acc), "rng": rng_state(), "model_config": self.model_config_json,
        }
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    def load(self, path: Path) -> None:
        """Restore from ``path``; anything but a complete checkpoint of this run is a :class:`CheckpointError`
        naming the file (the run then stops: a half-restored state is never trained on)."""
        ckpt = read_checkpoint(path)
        try:
            restored = [(obj, ckpt[key]) for obj, key in ((self.model, "model"), (self.optimizer, "optimizer"),
                                                          (self.scheduler, "scheduler"))]
            for obj, state in restored:
                obj.load_state_dict(state)
            if self.ema is not None and ckpt.get("ema") is not None:
                self.ema.load_state_dict(ckpt["ema"])
            position = tuple(int(ckpt[k]) for k in ("epoch", "batch_in_epoch", "global_step"))
            epoch_acc = dict(ckpt["epoch_acc"])
            set_rng_state(ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: does not fit this run ({type(exc).__name__}: {msg[:200]})") from None
        self.epoch, self.batch_in_epoch, self.global_step = position
        self.epoch_acc = epoch_acc


def read_checkpoint(path: Path) -> dict:
    """The dict in a ``checkpoint.pt`` (tensors and plain values only: ``weights_only=True``), or a
    :class:`CheckpointError` naming the file: truncated, garbage, a bare tensor, another program's file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage, refused globals: all mean "not a checkpoint we can use"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read training checkpoint (truncated or not a checkpoint?): "
                              f"{msg[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{path}: not an effnet training checkpoint")
    return ckpt
