"""Saving, loading and importing weights.

Our files are safetensors with the model config in the metadata, so a saved model rebuilds itself.
Importers translate the state-dict naming of timm, torchvision and lukemelas/EfficientNet-PyTorch.
Nothing is ever fully unpickled: ``torch.load(weights_only=True)`` or safetensors only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ..errors import CheckpointError, UsageError
from ..files import atomic_write
from .config import ModelConfig
from .efficientnet import EfficientNet

CONFIG_KEY = "effnet_config"
SOURCES = ("timm", "torchvision", "lukemelas")


def save(model: nn.Module, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s weights as safetensors with its config in the metadata (atomic)."""
    config: ModelConfig = model.config
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {CONFIG_KEY: config.to_json(), "format": "pt"}
    metadata.update(extra_metadata or {})
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata header of a ``.safetensors`` file (where effnet keeps the model's config)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def read_config(path: str | os.PathLike) -> ModelConfig:
    """The classifier config stored in an effnet ``.safetensors`` file."""
    meta = read_metadata(path)
    if CONFIG_KEY not in meta:
        raise CheckpointError(
            f"{path}: no effnet config in this file; it is a foreign checkpoint -- use "
            "effnet.load_weights(model, path) or 'effnet convert'"
        )
    try:
        return ModelConfig.from_json(meta[CONFIG_KEY])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: stored config is invalid ({exc})") from None


def run_weights(run_dir: str | os.PathLike, ema: bool = False) -> Path:
    """A training run directory's saved model: ``model.safetensors`` (or ``model_ema.safetensors``)."""
    path = Path(run_dir) / ("model_ema.safetensors" if ema else "model.safetensors")
    if not path.is_file():
        raise UsageError(f"{run_dir}: no {path.name} in this run directory (has training finished?)")
    return path


def load(path: str | os.PathLike, map_location: str = "cpu") -> EfficientNet:
    """Rebuild a model saved by :func:`save`, without naming it."""
    config = read_config(path)
    model = EfficientNet(config)
    state = read_state_dict(path)
    check_and_load(model, state, path)
    return model.to(map_location)


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


# ---------------------------------------------------------------------------------------------- importers

def detect_source(state: Mapping[str, torch.Tensor]) -> str:
    for source, (_, recognises) in _REGISTERED.items():  # importers other model modules register
        if recognises(state):
            return source
    if "conv_stem.weight" in state:
        return "timm"
    if "features.0.0.weight" in state:
        return "torchvision"
    if "_conv_stem.weight" in state:
        return "lukemelas"
    if "stem.conv.weight" in state:
        return "effnet"
    first = ", ".join(list(state)[:3])
    raise CheckpointError(f"unrecognised state-dict naming (first keys: {first})")


_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _from_timm(state: Mapping[str, torch.Tensor], model: EfficientNet) -> dict[str, torch.Tensor]:
    top = {"conv_stem": "stem.conv", "bn1": "stem.bn", "conv_head": "head.conv", "bn2": "head.bn",
           "classifier": "classifier"}
    # timm's "ds" block (no expansion) names its projection conv_pw; its "ir" block calls the expansion
    # conv_pw and the projection conv_pwl.
    ir = {"conv_pw": "expand.conv", "bn1": "expand.bn", "conv_dw": "dw.conv", "bn2": "dw.bn",
          "conv_pwl": "project.conv", "bn3": "project.bn"}
    ds = {"conv_dw": "dw.conv", "bn1": "dw.bn", "conv_pw": "project.conv", "bn2": "project.bn"}
    se = {"se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand"}
    ir_blocks = {m.group(1) for k in state if (m := re.match(r"blocks\.(\d+\.\d+)\.conv_pwl\.", k))}
    out = {}
    for key, value in state.items():
        if m := re.match(r"blocks\.(\d+\.\d+)\.(.+)\.(\w+)$", key):
            block, module, param = m.groups()
            table = {**(ir if block in ir_blocks else ds), **se}
            if module not in table:
                raise CheckpointError(f"unexpected timm key {key}")
            out[f"blocks.{block}.{table[module]}.{param}"] = value
        elif m := re.match(r"(\w+)\.(\w+)$", key):
            if m.group(1) not in top:
                raise CheckpointError(f"unexpected timm key {key}")
            out[f"{top[m.group(1)]}.{m.group(2)}"] = value
        else:
            raise CheckpointError(f"unexpected timm key {key}")
    return out


def _from_torchvision(state: Mapping[str, torch.Tensor], model: EfficientNet) -> dict[str, torch.Tensor]:
    n_stages = len(model.blocks)
    head_idx = n_stages + 1
    with_expand = {m.group(1) for k in state if (m := re.match(r"features\.(\d+\.\d+)\.block\.3\.", k))}
    out = {}
    for key, value in state.items():
        if m := re.match(rf"features\.0\.([01])\.{_BN}$|features\.0\.0\.(weight)$", key):
            part = "conv" if key.startswith("features.0.0.") else "bn"
            out[f"stem.{part}.{key.rsplit('.', 1)[1]}"] = value
        elif m := re.match(rf"features\.{head_idx}\.([01])\.(\w+)$", key):
            out[f"head.{'conv' if m.group(1) == '0' else 'bn'}.{m.group(2)}"] = value
        elif m := re.match(r"features\.(\d+)\.(\d+)\.block\.(\d)\.(.+)$", key):
            stage, idx, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            roles = ["expand", "dw", "se", "project"] if f"{stage}.{idx}" in with_expand else ["dw", "se", "project"]
            role = roles[j]
            if role == "se":
                rest = rest.replace("fc1", "reduce").replace("fc2", "expand")
            else:
                rest = re.sub(r"^0\.", "conv.", re.sub(r"^1\.", "bn.", rest))
            out[f"blocks.{stage - 1}.{idx}.{role}.{rest}"] = value
        elif m := re.match(r"classifier\.1\.(weight|bias)$", key):
            out[f"classifier.{m.group(1)}"] = value
        else:
            raise CheckpointError(f"unexpected torchvision key {key}")
    return out


def _from_lukemelas(state: Mapping[str, torch.Tensor], model: EfficientNet) -> dict[str, torch.Tensor]:
    top = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "classifier"}
    inner = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "dw.conv", "_bn1": "dw.bn",
             "_se_reduce": "se.reduce", "_se_expand": "se.expand", "_project_conv": "project.conv", "_bn2": "project.bn"}
    # lukemelas numbers blocks flat (_blocks.N); our model nests them by stage.
    flat = [f"{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    out = {}
    for key, value in state.items():
        if m := re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key):
            n, module, param = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(flat) or module not in inner:
                raise CheckpointError(f"unexpected lukemelas key {key} (model has {len(flat)} blocks)")
            out[f"blocks.{flat[n]}.{inner[module]}.{param}"] = value
        elif (m := re.match(r"(\w+)\.(\w+)$", key)) and m.group(1) in top:
            out[f"{top[m.group(1)]}.{m.group(2)}"] = value
        else:
            raise CheckpointError(f"unexpected lukemelas key {key}")
    return out


_IMPORTERS = {"timm": _from_timm, "torchvision": _from_torchvision, "lukemelas": _from_lukemelas}
_REGISTERED: dict = {}


def register_importer(source: str, importer, recognises) -> None:
    """Add a ``source`` for :func:`load_weights` from another model module (e.g. ``effdet`` for EfficientDet,
    registered by ``efficientdet.py``): ``importer(state, model)`` renames, ``recognises(state)`` detects."""
    _IMPORTERS[source] = importer
    _REGISTERED[source] = (importer, recognises)


def resolve_source(state: Mapping[str, torch.Tensor], source: str = "auto") -> str:
    """The naming of ``state``: ``source`` checked against what its keys look like, or detected (``auto``)."""
    detected = detect_source(state)
    if source == "auto":
        return detected
    if source not in _IMPORTERS:
        raise UsageError(f"unknown source {source!r}; expected auto, {', '.join(_IMPORTERS)}")
    if detected != source:
        raise CheckpointError(f"expected {source} naming but the keys look like {detected}")
    return source


def translate_state_dict(state: Mapping[str, torch.Tensor], model: EfficientNet, source: str = "auto") -> dict:
    """Rename a foreign state dict to this package's names (``source``: auto, timm, torchvision, lukemelas, or one
    another model module registered: effdet)."""
    source = resolve_source(state, source)
    return dict(state) if source == "effnet" else _IMPORTERS[source](state, model)


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


def set_bn_eps(model: nn.Module, eps: float) -> None:
    """Set every BatchNorm's epsilon (PyTorch-trained weights use 1e-5, TF-trained 1e-3)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = eps
    if hasattr(model, "config"):
        model.config = model.config.replace(bn_eps=eps)


def load_weights(
    model: EfficientNet,
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    source: str = "auto",
    bn_eps: float | None = None,
) -> EfficientNet:
    """Load weights of any supported naming into ``model`` (in place; also returned).

    ``bn_eps`` sets the BatchNorm epsilon the weights were trained with when it differs from the model's
    1e-3: timm's non-``tf_`` EfficientNets use PyTorch's 1e-5 (their keys do not tell, so give it). For
    torchvision's naming, named or detected, it defaults to :func:`torchvision_bn_eps` (B0-B4: 1e-5).
    """
    if isinstance(path_or_state_dict, Mapping):
        label, state = "<state dict>", unwrap_state_dict(path_or_state_dict)
    else:
        label, state = str(path_or_state_dict), read_state_dict(path_or_state_dict)
    try:
        translated = translate_state_dict(state, model, source)
        source = resolve_source(state, source)
    except CheckpointError as exc:
        raise CheckpointError(f"{label}: {exc}") from None
    check_and_load(model, translated, label)
    if bn_eps is None and source == "torchvision":
        bn_eps = torchvision_bn_eps(model.config.name)
    if bn_eps is not None:
        set_bn_eps(model, bn_eps)
    return model


def torchvision_bn_eps(name: str) -> float:
    """torchvision trained B0-B4 itself (eps 1e-5) and ported B5-B7 from TF (eps 1e-3)."""
    return 1e-5 if name in {f"efficientnet_b{i}" for i in range(5)} else 1e-3
