"""Making a built model fit what was asked of it: a new head for another class count, another number of input
channels, the multi-scale backbone alone, training settings (dropout, stochastic depth) rebuilt in -- with the
weights kept. Used by :func:`effnet.models.zoo.registry.create_model` for published weights, Hub folders and saved
models alike."""

from __future__ import annotations

import torch
from torch import nn

from ..nets.efficientnet import EfficientNet, EfficientNetFeatures
from ..nets.size import size_checked


def adapted(model: EfficientNet, num_classes: int | None, in_chans: int, features_only: bool) -> nn.Module:
    """A model with weights made to fit: ``in_chans`` inputs, a new head for ``num_classes``, or its backbone. The
    stem and head about to be built are size-checked first (:func:`effnet.models.nets.size.size_checked`)."""
    grown = {k: v for k, v in (("in_chans", None if in_chans == 3 else in_chans), ("num_classes", num_classes))
             if v is not None and v != getattr(model.config, k)}
    if grown:
        size_checked(model.config.replace(**grown))
    if in_chans != 3:
        adapt_input_conv(model, in_chans)
    if num_classes is not None and num_classes != model.config.num_classes:
        model.reset_classifier(num_classes)
    return features_of(model) if features_only else model


def features_of(model: EfficientNet) -> EfficientNetFeatures:
    """The multi-scale backbone of ``model``, with its weights."""
    feats = EfficientNetFeatures(model.config)
    feats.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith(("stem.", "blocks."))})
    return feats


def adapt_input_conv(model: EfficientNet, in_chans: int) -> None:
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


def with_training(model: EfficientNet, training: dict) -> EfficientNet:
    """``model`` rebuilt with ``training`` (dropout, drop_path_rate) when given, its weights kept."""
    if not training:
        return model
    rebuilt = EfficientNet(model.config.replace(**training))
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt.eval()
