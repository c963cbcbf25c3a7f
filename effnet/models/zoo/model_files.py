"""effnet's model files: safetensors with the model's config in the metadata, so a saved model rebuilds itself
(:func:`effnet.models.zoo.registry.stored_config` reads that config back), plus reading any checkpoint's tensors.

Nothing is ever fully unpickled: ``torch.load(weights_only=True)`` or safetensors only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ...errors import CheckpointError, UsageError
from ...files import atomic_write

CONFIG_KEY = "effnet_config"


def save(model: nn.Module, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s weights as safetensors with its config in the metadata (atomic)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {CONFIG_KEY: model.config.to_json(), "format": "pt"}
    metadata.update(extra_metadata or {})
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata header of a ``.safetensors`` file (where effnet keeps the model's config)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def run_weights(run_dir: str | os.PathLike, ema: bool = False) -> Path:
    """A training run directory's saved model: ``model.safetensors`` (or ``model_ema.safetensors``)."""
    path = Path(run_dir) / ("model_ema.safetensors" if ema else "model.safetensors")
    if not path.is_file():
        raise UsageError(f"{run_dir}: no {path.name} in this run directory (has training finished?)")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a ``torch.save`` file (never fully unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
        is_zip_or_pickle = head.startswith(b"PK") or head[:1] == b"\x80"
        if not is_zip_or_pickle:
            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, ValueError, OSError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated or not a checkpoint?): {msg}") from None
    except Exception as exc:  # pickle.UnpicklingError for forbidden globals
        raise CheckpointError(f"{path}: refused to unpickle (only tensors are loaded): {exc}") from None
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj, path: str | os.PathLike = "<state dict>") -> dict[str, torch.Tensor]:
    """Find the state dict inside common training-checkpoint wrappers and strip a DDP ``module.`` prefix."""
    if isinstance(obj, Mapping):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: does not contain a state dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def check_and_load(model: nn.Module, state: Mapping[str, torch.Tensor], path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (first: {'; '.join(wrong[:3])})")
    if problems:
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise CheckpointError(f"{path}: does not fit {name}: " + "; ".join(problems))
    model.load_state_dict(state)
