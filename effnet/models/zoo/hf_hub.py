"""Hugging Face Hub folders, both ways, in the layout timm reads and writes.

A folder holds ``config.json`` (``architecture``, ``num_classes``, ``model_args``, ``pretrained_cfg`` with the
preprocessing, ``label_names``) and ``model.safetensors`` in timm's state-dict naming, so that
``timm.create_model("local-dir:DIR", pretrained=True)`` and ``"hf-hub:ORG/NAME"`` build the same network with the
same weights. effnet adds its own config under ``"effnet"`` (timm ignores it) so nothing is lost coming back.

The translation is hand-written because it is the inverse of :func:`effnet.models.zoo.importers.from_timm` (timm
itself is a test-only dependency: exporting must not need it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ...errors import CheckpointError, UsageError
from ...files import atomic_write
from ..nets.config import ModelConfig
from ..nets.families import CLASSIFIERS, TF_PREFIX, classifier_config, classifier_name
from .names import HF_HUB_PREFIXES
from .model_files import check_and_load, read_state_dict
from .importers import TIMM_BLOCK_NAMES, TIMM_ONE_WAY, TIMM_SE_NAMES, translate_state_dict

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm writes the first; older folders the second
TF_BN_EPS = 1e-3  # timm's tf_* models: TensorFlow's BatchNorm epsilon and "SAME" padding
TORCH_BN_EPS = 1e-5

# config fields timm takes as model_args or preprocessing: every other field must equal the named variant's
_PORTABLE = ("num_classes", "in_chans", "dropout", "drop_path_rate", "bn_eps", "bn_momentum", "tf_padding",
             "resolution", "mean", "std", "crop_pct", "interpolation", "class_names")


# ---------------------------------------------------------------------------------------------- writing

# effnet's module names -> timm's, per timm block kind (the inverse of the importer's table)
_TIMM_OF = {kind: {ours: theirs for theirs, ours in table.items()} for kind, table in TIMM_BLOCK_NAMES.items()}
_TIMM_TOP = {"stem.conv": "conv_stem", "stem.bn": "bn1", "head.conv": "conv_head", "head.bn": "bn2"}


def _timm_kind(parts: set[str]) -> str:
    """timm's block kind of one of our blocks, from its parts: a conv block is "cn", expansion with a depthwise
    conv "ir", expansion without one (Fused-MBConv) "er", a depthwise conv alone "ds"."""
    if "conv" in parts:
        return "cn"
    if "expand" in parts:
        return "ir" if "dw" in parts else "er"
    return "ds"


def _timm_key(key: str, kinds: dict[str, str]) -> str:
    """One effnet state-dict key in timm's naming (``kinds``: block ``S.B`` -> timm's kind of it)."""
    if m := re.match(r"(stem\.conv|stem\.bn|head\.conv|head\.bn)\.(\w+)$", key):
        return f"{_TIMM_TOP[m.group(1)]}.{m.group(2)}"
    if m := re.match(r"blocks\.(\d+\.\d+)\.(\w+\.\w+)\.(\w+)$", key):
        block, module, param = m.groups()
        table = {**_TIMM_OF[kinds[block]], **{ours: theirs for theirs, ours in TIMM_SE_NAMES.items()}}
        if module in table:
            return f"blocks.{block}.{table[module]}.{param}"
    if key.startswith("classifier."):
        return key
    raise CheckpointError(f"no timm name for effnet key {key}")


def timm_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s tensors under timm's names (EfficientNet and EfficientNetV2 blocks alike)."""
    state = model.state_dict()
    parts: dict[str, set[str]] = {}
    for key in state:
        if m := re.match(r"blocks\.(\d+\.\d+)\.(\w+)\.", key):
            parts.setdefault(m.group(1), set()).add(m.group(2))
    kinds = {block: _timm_kind(names) for block, names in parts.items()}
    return {_timm_key(k, kinds): v.detach().contiguous().cpu() for k, v in state.items()}


def timm_architecture(config: ModelConfig) -> str:
    """The timm model that builds ``config``: its named variant (EfficientNet or EfficientNetV2), when only
    portable fields differ."""
    if config.name not in CLASSIFIERS:
        raise UsageError(f"{config.name}: timm has no architecture for this config (a Hub folder needs one of "
                         f"{', '.join(CLASSIFIERS)}, with any classes, dropout, padding or preprocessing)")
    base = classifier_config(config.name)
    if config.replace(**{f: getattr(base, f) for f in _PORTABLE}) != base:
        raise UsageError(f"{config.name}: this config changes the architecture (width, depth, blocks, stem or "
                         "head), which timm cannot rebuild; save it with effnet.save instead")
    # timm's one builder of it (tf_efficientnetv2_b0 for B0); model_args set the padding and eps either way
    return TIMM_ONE_WAY.get(config.name, config.name)


def hf_hub_config(model: nn.Module) -> dict:
    """``config.json`` for ``model``: what timm needs to rebuild it and preprocess its inputs."""
    config: ModelConfig = model.config
    from .imagenet import class_names_for

    pretrained_cfg = {
        "input_size": [config.in_chans, config.resolution, config.resolution],
        "interpolation": config.interpolation, "crop_pct": config.crop_pct, "crop_mode": "center",
        "mean": list(config.mean), "std": list(config.std), "num_classes": config.num_classes,
        "first_conv": "conv_stem", "classifier": "classifier", "fixed_input_size": False,
    }
    return {
        "architecture": timm_architecture(config),
        "num_classes": config.num_classes,
        "num_features": model.classifier.in_features,
        "global_pool": "avg",
        "label_names": list(class_names_for(config)),
        "model_args": {"bn_eps": config.bn_eps, "pad_type": "same" if config.tf_padding else "",
                       "in_chans": config.in_chans, "drop_rate": config.dropout,
                       "drop_path_rate": config.drop_path_rate},
        "pretrained_cfg": pretrained_cfg,
        "effnet": config.to_dict(),
    }


def save_pretrained(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``model`` as a Hugging Face Hub folder timm loads (``timm.create_model("local-dir:DIR",
    pretrained=True)``), ready for ``huggingface_hub.upload_folder``. Each file is written atomically."""
    directory = Path(directory)
    config = hf_hub_config(model)  # refuses before anything is written
    tensors = timm_state_dict(model)
    atomic_write(directory / WEIGHT_FILES[0], lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return directory


# ---------------------------------------------------------------------------------------------- reading

def _config_from_timm(cfg: dict) -> ModelConfig:
    """The effnet config of a folder timm wrote: architecture, model_args and pretrained_cfg."""
    arch = str(cfg.get("architecture", ""))
    name = classifier_name(arch)
    if name not in CLASSIFIERS or not arch.removeprefix(TF_PREFIX).startswith("efficientnet"):
        raise UsageError(f"Hub folder architecture {arch!r} is not an EfficientNet effnet builds "
                         f"({', '.join(CLASSIFIERS)}, or their tf_ versions)")
    args = cfg.get("model_args") or {}
    pre = cfg.get("pretrained_cfg") or {}
    tf_port = arch.startswith(TF_PREFIX)  # timm's tf_* builders default to SAME padding and eps 1e-3
    changes = {
        "tf_padding": args.get("pad_type", "same" if tf_port else "") == "same",
        "bn_eps": float(args.get("bn_eps", TF_BN_EPS if tf_port else TORCH_BN_EPS)),
        "num_classes": int(cfg.get("num_classes", pre.get("num_classes", 1000))),
        "in_chans": int(args.get("in_chans", (pre.get("input_size") or [3])[0])),
    }
    if "input_size" in pre:
        changes["resolution"] = int(pre["input_size"][-1])
    for key in ("mean", "std"):
        if key in pre:
            changes[key] = tuple(float(v) for v in pre[key])
    if "crop_pct" in pre:
        changes["crop_pct"] = float(pre["crop_pct"])
    if pre.get("interpolation") in ("bicubic", "bilinear"):
        changes["interpolation"] = pre["interpolation"]
    labels = cfg.get("label_names") or pre.get("label_names")
    # ImageNet folders name classes by WordNet synset (n01440764): effnet's own ImageNet names read better
    if isinstance(labels, list) and len(labels) == changes["num_classes"] and not re.fullmatch(r"n\d{8}", labels[0]):
        changes["class_names"] = tuple(str(v) for v in labels)
    return classifier_config(name).replace(**changes)


def _local_files(spec: str) -> tuple[Path, Path]:
    folder = Path(spec.removeprefix("local-dir:")).expanduser()
    if not (folder / CONFIG_FILE).is_file():
        raise UsageError(f"{folder}: not a Hub model folder (no {CONFIG_FILE})")
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / CONFIG_FILE, folder / name
    raise UsageError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES)})")


def _hf_hub_files(repo: str) -> tuple[Path, Path]:
    """``config.json`` and the weights of ``ORG/NAME[@REVISION]`` through huggingface_hub: its cache,
    ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and token handling are the user's."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    repo_id, _, revision = repo.partition("@")
    try:
        config = Path(hf_hub_download(repo_id, CONFIG_FILE, revision=revision or None))
        for name in WEIGHT_FILES:
            try:
                return config, Path(hf_hub_download(repo_id, name, revision=revision or None))
            except EntryNotFoundError:
                continue
    except LocalEntryNotFoundError:
        raise UsageError(f"hf-hub:{repo}: not in the Hugging Face cache and the Hub cannot be reached "
                         "(offline?)") from None
    except HfHubHTTPError as exc:
        raise UsageError(f"hf-hub:{repo}: {str(exc).splitlines()[0]}") from None
    raise UsageError(f"hf-hub:{repo}: no weights ({' or '.join(WEIGHT_FILES)})")


def _files(spec: str) -> tuple[Path, Path]:
    if not spec.startswith(HF_HUB_PREFIXES):
        raise UsageError(f"{spec}: a Hub folder is named local-dir:DIR or hf-hub:ORG/NAME")
    return _local_files(spec) if spec.startswith("local-dir:") else _hf_hub_files(spec.removeprefix("hf-hub:"))


def _parse_config(config_path: Path) -> ModelConfig:
    try:
        cfg = json.loads(config_path.read_text())
        return ModelConfig.from_dict(cfg["effnet"]) if "effnet" in cfg else _config_from_timm(cfg)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise UsageError(f"{config_path}: not a valid Hub model config: {exc}") from None


def read_hf_hub_config(spec: str) -> ModelConfig:
    """The effnet config of a Hub folder (``local-dir:DIR`` / ``hf-hub:ORG/NAME``), preprocessing included."""
    return _parse_config(_files(spec)[0])


def load_hf_hub_model(spec: str) -> nn.Module:
    """The model in a Hub folder: ``local-dir:DIR`` or ``hf-hub:ORG/NAME[@REVISION]``, written by timm or by
    :func:`save_pretrained`, with the folder's preprocessing in its config."""
    from ..nets.efficientnet import EfficientNet
    from ..nets.size import size_checked

    config_path, weights_path = _files(spec)
    model = EfficientNet(size_checked(_parse_config(config_path)))  # a folder's config.json is data a user gave
    state = read_state_dict(weights_path)
    check_and_load(model, translate_state_dict(state, model, "timm"), weights_path)
    return model.eval()
