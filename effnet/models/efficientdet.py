"""EfficientDet (Tan, Pang & Le, CVPR 2020): the EfficientNet backbone + BiFPN + shared class/box nets.

The detector is a sibling of :mod:`effnet.models.efficientnet`: the backbone is :class:`EfficientNetFeatures`
(P3-P5 = strides 8, 16, 32), the neck and heads are in :mod:`effnet.models.bifpn`. Architecture is data: one
frozen :class:`DetectorConfig` (saved with the weights) and one scaling table, :data:`DETECTOR_VARIANTS`.

Raw forward returns ``(class_outputs, box_outputs)``: lists over P3-P7 of (N, anchors*classes, H, W) and
(N, anchors*4, H, W) in the official/effdet channel layout (anchor-major; box codes ty, tx, th, tw).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, UnknownModelError, UsageError
from .bifpn import BiFPN, HeadNet, SeparableConv, init_detector_weights
from .config import ModelConfig, variant_config
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

# Paper Table 1 / official hparams_config.py, as data: backbone, BiFPN width (64 * 1.35^phi, rounded by
# the authors), BiFPN depth (3 + phi, capped at 8), box/class depth (3 + floor(phi / 3)), input size
# (512 + 128 phi; D7 1536 on the D6 backbone), anchor scale, fusion, backbone stochastic depth.
# "sum" fusion: the official D6/D7/Lite use plain sums "for training stability". The last column is the top
# pyramid level: 7 (P3-P7), 8 for D7x (P3-P8, official hparams_config.py 'efficientdet-d7x').
DETECTOR_VARIANTS: dict[str, tuple[str, int, int, int, int, float, str, float, int]] = {
    "efficientdet_d0": ("efficientnet_b0", 64, 3, 3, 512, 4.0, "fast", 0.2, 7),
    "efficientdet_d1": ("efficientnet_b1", 88, 4, 3, 640, 4.0, "fast", 0.2, 7),
    "efficientdet_d2": ("efficientnet_b2", 112, 5, 3, 768, 4.0, "fast", 0.2, 7),
    "efficientdet_d3": ("efficientnet_b3", 160, 6, 4, 896, 4.0, "fast", 0.2, 7),
    "efficientdet_d4": ("efficientnet_b4", 224, 7, 4, 1024, 4.0, "fast", 0.2, 7),
    "efficientdet_d5": ("efficientnet_b5", 288, 7, 4, 1280, 4.0, "fast", 0.2, 7),
    "efficientdet_d6": ("efficientnet_b6", 384, 8, 5, 1280, 4.0, "sum", 0.2, 7),
    "efficientdet_d7": ("efficientnet_b6", 384, 8, 5, 1536, 5.0, "sum", 0.2, 7),
    # D7x: the B7 backbone and one more pyramid level (P8), anchor scale 4 (official 'efficientdet-d7x').
    "efficientdet_d7x": ("efficientnet_b7", 384, 8, 5, 1536, 4.0, "sum", 0.2, 8),
    # EfficientDet-Lite (official efficientdet/hparams_config.py 'efficientdet-lite*'): ReLU6, no SE.
    "efficientdet_lite0": ("efficientnet_lite0", 64, 3, 3, 320, 3.0, "sum", 0.0, 7),
    "efficientdet_lite1": ("efficientnet_lite1", 88, 4, 3, 384, 3.0, "sum", 0.2, 7),
    "efficientdet_lite2": ("efficientnet_lite2", 112, 5, 3, 448, 3.0, "sum", 0.2, 7),
    "efficientdet_lite3": ("efficientnet_lite3", 160, 6, 4, 512, 4.0, "sum", 0.2, 7),
    # Lite3x: Lite3's backbone with a wider BiFPN (200) at 640 px, anchor scale 3 (official 'efficientdet-lite3x').
    "efficientdet_lite3x": ("efficientnet_lite3", 200, 6, 4, 640, 3.0, "sum", 0.2, 7),
    "efficientdet_lite4": ("efficientnet_lite4", 224, 7, 4, 640, 4.0, "sum", 0.2, 7),
}

# 3 scales x 3 aspect ratios per location (RetinaNet); ratios as (w, h) multipliers, as the official code.
ASPECT_RATIOS = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to rebuild a detector; stored with every checkpoint (JSON, ``kind`` marks it)."""

    name: str = "efficientdet_d0"
    backbone: ModelConfig = dataclasses.field(default_factory=lambda: variant_config("efficientnet_b0"))
    fpn_channels: int = 64
    fpn_repeats: int = 3
    head_repeats: int = 3
    resolution: int = 512
    anchor_scale: float = 4.0
    fusion: str = "fast"  # "fast" normalized fusion or plain "sum"
    num_classes: int = 90
    class_names: tuple[str, ...] | None = None
    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: tuple[tuple[float, float], ...] = ASPECT_RATIOS
    redundant_bias: bool = True  # official weights have conv bias in front of BN; kept for weight parity
    tf_padding: bool = False
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    kind: str = "efficientdet"

    @property
    def activation(self) -> str:
        return self.backbone.activation

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.backbone.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.backbone.std

    @property
    def num_anchors(self) -> int:
        return self.num_scales * len(self.aspect_ratios)

    def replace(self, **changes: Any) -> DetectorConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> DetectorConfig:
        known = {f.name for f in dataclasses.fields(DetectorConfig)}
        unknown = sorted(set(data) - known)
        if unknown:  # a classifier's config has fields a detector's lacks
            raise UsageError(f"not an EfficientDet config (unknown fields: {', '.join(unknown) or '-'})")
        data = dict(data)
        data["backbone"] = ModelConfig.from_dict(data["backbone"])
        data["aspect_ratios"] = tuple(tuple(r) for r in data.get("aspect_ratios", ASPECT_RATIOS))
        if data.get("class_names") is not None:
            data["class_names"] = tuple(data["class_names"])
        return DetectorConfig(**data)


def detector_config(name: str, num_classes: int = 90, tf_padding: bool = False) -> DetectorConfig:
    """The config of a named variant from :data:`DETECTOR_VARIANTS`."""
    if name not in DETECTOR_VARIANTS:
        raise UnknownModelError(f"unknown detector {name!r}; known: {', '.join(DETECTOR_VARIANTS)}")
    backbone, width, depth, head_depth, res, anchor_scale, fusion, drop_path, max_level = DETECTOR_VARIANTS[name]
    bb = variant_config(backbone).replace(drop_path_rate=drop_path, num_classes=0, tf_padding=tf_padding)
    return DetectorConfig(name=name, backbone=bb, fpn_channels=width, fpn_repeats=depth, head_repeats=head_depth,
                          resolution=res, anchor_scale=anchor_scale, fusion=fusion, num_classes=num_classes,
                          tf_padding=tf_padding, max_level=max_level)


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
