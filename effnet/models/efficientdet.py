"""EfficientDet (Tan, Pang & Le, CVPR 2020): the EfficientNet backbone + BiFPN + shared class/box nets.

The detector is a sibling of :mod:`effnet.models.efficientnet`: the backbone is :class:`EfficientNetFeatures`
(P3-P5 = strides 8, 16, 32), the neck and heads are in :mod:`effnet.models.bifpn`. Architecture is data: one
frozen :class:`DetectorConfig` (saved with the weights) and one scaling table, :data:`DETECTOR_VARIANTS`, both in
:mod:`effnet.models.detector_config`.

Raw forward returns ``(class_outputs, box_outputs)``: lists over P3-P7 of (N, anchors*classes, H, W) and
(N, anchors*4, H, W) in the official/effdet channel layout (anchor-major; box codes ty, tx, th, tw).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import CheckpointError, UsageError
from .bifpn import BiFPN, HeadNet, SeparableConv, init_detector_weights
from .detector_config import DetectorConfig
from .efficientnet import EfficientNetFeatures
from .layers import BNSettings
from .lean import set_memory_efficient
from .weights import (
    CONFIG_KEY,
    _from_timm,
    check_and_load,
    read_metadata,
    read_state_dict,
    register_importer,
)

class EfficientDet(nn.Module):
    """Backbone (P3-P5) -> BiFPN (P3-P7) -> class net and box net, shared across levels."""

    def __init__(self, config: DetectorConfig, backbone: EfficientNetFeatures | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else EfficientNetFeatures(config.backbone)
        in_ch = [info["num_chs"] for info in self.backbone.feature_info[2:]]  # strides 8, 16, 32
        bn = BNSettings.of(config)
        levels = config.max_level - config.min_level + 1
        self.fpn = BiFPN(in_ch, config.fpn_channels, config.fpn_repeats, config.fusion, config.activation,
                         config.tf_padding, config.redundant_bias, bn, config.min_level, config.max_level)
        head = dict(activation=config.activation, redundant_bias=config.redundant_bias, bn=bn)
        self.class_net = HeadNet(config.fpn_channels, config.head_repeats, levels, config.num_classes,
                                 config.num_anchors, **head)
        self.box_net = HeadNet(config.fpn_channels, config.head_repeats, levels, 4, config.num_anchors, **head)
        init_detector_weights(self.fpn, [self.class_net, self.box_net], self.class_net)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.fpn(self.backbone(x)[2:])
        return self.class_net(feats), self.box_net(feats)

    def reset_head(self, num_classes: int, class_names: tuple[str, ...] | None = None) -> None:
        """A new, freshly initialised class net for ``num_classes`` (transfer learning)."""
        c = self.config
        bn = BNSettings.of(c)
        self.class_net = HeadNet(c.fpn_channels, c.head_repeats, c.max_level - c.min_level + 1, num_classes,
                                 c.num_anchors, c.activation, c.redundant_bias, bn)
        init_detector_weights(nn.Identity(), [self.class_net], self.class_net)
        self.config = c.replace(num_classes=num_classes, class_names=class_names)

    def reset_classes(self, num_classes: int, class_names: tuple[str, ...] | None = None) -> None:
        """Fine-tuning from COCO: a new class net *output layer* for ``num_classes`` (focal-loss prior bias, as
        :func:`init_detector_weights`); backbone, BiFPN, box net and the class net's shared convs are kept."""
        c = self.config
        self.class_net.predict = SeparableConv(c.fpn_channels, num_classes * c.num_anchors, True, None)
        init_detector_weights(nn.Identity(), [self.class_net.predict], self.class_net)
        self.config = c.replace(num_classes=num_classes, class_names=class_names)

    def freeze_backbone(self, freeze: bool = True) -> None:
        for p in self.backbone.parameters():
            p.requires_grad_(not freeze)

    def freeze_early(self, stages: int = 2, batchnorm: bool = True) -> None:
        """Fine-tuning a pretrained backbone as detection recipes do (Detectron2's ``FREEZE_AT`` + frozen BN):
        the stem and the first ``stages`` backbone stages stop learning (no backward pass through the two
        highest resolutions), and with ``batchnorm`` every backbone BatchNorm keeps its ImageNet statistics,
        in eval mode even while training, since statistics of a few images per batch are noisy."""
        early = [self.backbone.stem, *self.backbone.blocks[:stages]]
        for p in (q for m in early for q in m.parameters()):
            p.requires_grad_(False)
        self.frozen_backbone_bn = batchnorm
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and getattr(self, "frozen_backbone_bn", False):
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True, stages: int | None = None):
        self.backbone.set_grad_checkpointing(enable, stages)
        return self

    def set_memory_efficient(self, enable: bool = True):
        set_memory_efficient(self, enable)
        return self


# ---------------------------------------------------------------------------------------------- files

def load_detector(path: str | os.PathLike) -> EfficientDet:
    """Rebuild a detector saved with :func:`effnet.models.weights.save` (``effnet.load`` takes either kind)."""
    text = read_metadata(path).get(CONFIG_KEY)
    try:
        config = DetectorConfig.from_dict(json.loads(text)) if text else None
    except (ValueError, TypeError, KeyError, UsageError):
        config = None
    if config is None:
        raise CheckpointError(f"{path}: not an effnet detector file (no EfficientDet config in its metadata)")
    model = EfficientDet(config)
    check_and_load(model, read_state_dict(path), path)
    return model


# ---------------------------------------------------------------------------------------------- effdet import

def _effdet_neck_key(key: str) -> str:
    """Rename one effdet BiFPN key (``fpn.resample.N`` / ``fpn.cell.R.fnode.K``) to ours."""
    if m := re.match(r"fpn\.resample\.(\d+)\.conv\.(conv|bn)\.(\w+)$", key):
        return f"fpn.extra.{int(m.group(1)) - 3}.conv.{m.group(2)}.{m.group(3)}"
    m = re.match(r"fpn\.cell\.(\d+)\.fnode\.(\d+)\.(.+)$", key)
    if not m:
        raise CheckpointError(f"unexpected effdet key {key}")
    prefix, rest = f"fpn.cells.{m.group(1)}.{m.group(2)}", m.group(3)
    if rest == "combine.edge_weights":
        return f"{prefix}.edge_weights"
    if r := re.match(r"combine\.resample\.(\d+)\.conv\.(conv|bn)\.(\w+)$", rest):
        return f"{prefix}.resample.{r.group(1)}.conv.{r.group(2)}.{r.group(3)}"
    if r := re.match(r"after_combine\.conv\.(conv_dw|conv_pw|bn)\.(\w+)$", rest):
        return f"{prefix}.conv.{ {'conv_dw': 'dw', 'conv_pw': 'pw', 'bn': 'bn'}[r.group(1)]}.{r.group(2)}"
    raise CheckpointError(f"unexpected effdet key {key}")


def _effdet_head_key(key: str) -> str:
    m = re.match(r"(class_net|box_net)\.(.+)$", key)
    net, rest = m.group(1), m.group(2)
    if r := re.match(r"(conv_rep\.(\d+)|predict)\.(conv_dw|conv_pw)\.(\w+)$", rest):
        conv = f"convs.{r.group(2)}" if r.group(2) is not None else "predict"
        return f"{net}.{conv}.{'dw' if r.group(3) == 'conv_dw' else 'pw'}.{r.group(4)}"
    if r := re.match(r"bn_rep\.(\d+)\.(\d+)\.bn\.(\w+)$", rest):  # repeat-first (the official layout)
        return f"{net}.bns.{r.group(2)}.{r.group(1)}.{r.group(3)}"
    if r := re.match(r"bn_rep\.(\d+)\.(\d+)\.(\w+)$", rest):  # level-first (effdet's torchscript layout)
        return f"{net}.bns.{r.group(1)}.{r.group(2)}.{r.group(3)}"
    raise CheckpointError(f"unexpected effdet key {key}")


def _resample_index(model: EfficientDet, key: str) -> str:
    """effdet names a node's resamplers by input node id; ours are numbered by position in the node."""
    m = re.match(r"(fpn\.cells\.(\d+)\.(\d+)\.resample\.)(\d+)(\..+)$", key)
    if not m:
        return key
    node = model.fpn.cells[int(m.group(2))][int(m.group(3))]
    return f"{m.group(1)}{node.inputs.index(int(m.group(4)))}{m.group(5)}"


def from_effdet(state: Mapping[str, torch.Tensor], model: EfficientDet) -> dict[str, torch.Tensor]:
    """effdet (rwightman/efficientdet-pytorch) state dict -> ours. The backbone is a timm EfficientNet."""
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    out = {f"backbone.{k}": v for k, v in _from_timm(backbone, model.backbone).items()}
    for key, value in state.items():
        if key.startswith("backbone."):
            continue
        new = _effdet_neck_key(key) if key.startswith("fpn.") else _effdet_head_key(key)
        out[_resample_index(model, new)] = value
    return out


register_importer("effdet", from_effdet, lambda state: any(k.startswith("class_net.") for k in state))
