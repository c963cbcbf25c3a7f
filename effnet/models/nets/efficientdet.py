"""EfficientDet (Tan, Pang & Le, CVPR 2020): the EfficientNet backbone + BiFPN + shared class/box nets.

The detector is a sibling of :mod:`effnet.models.nets.efficientnet`: the backbone is :class:`EfficientNetFeatures`
(P3-P5 = strides 8, 16, 32), the neck and heads are in :mod:`effnet.models.nets.bifpn`. Architecture is data: one
frozen :class:`DetectorConfig` (saved with the weights) and one scaling table, :data:`DETECTOR_VARIANTS`, both in
:mod:`effnet.models.nets.detector_config`.

Raw forward returns ``(class_outputs, box_outputs)``: lists over P3-P7 of (N, anchors*classes, H, W) and
(N, anchors*4, H, W) in the official/effdet channel layout (anchor-major; box codes ty, tx, th, tw).
"""

from __future__ import annotations


import torch
from torch import nn

from .bifpn import BiFPN, HeadNet, SeparableConv, init_detector_weights
from .detector_config import DetectorConfig
from .efficientnet import EfficientNetFeatures
from .layers import BATCHNORMS, BNSettings
from .lean import set_memory_efficient


class EfficientDet(nn.Module):
    """Backbone (P3-P5) -> BiFPN (P3-P7) -> class net and box net, shared across levels."""

    def __init__(self, config: DetectorConfig, backbone: EfficientNetFeatures | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else EfficientNetFeatures(config.backbone)
        in_ch = [info["num_chs"] for info in self.backbone.feature_info[2:]]  # strides 8, 16, 32
        bn = BNSettings.of(config)
        levels = config.num_levels
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
        self.class_net = HeadNet(c.fpn_channels, c.head_repeats, c.num_levels, num_classes,
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
                if isinstance(m, BATCHNORMS):
                    m.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True, stages: int | None = None):
        self.backbone.set_grad_checkpointing(enable, stages)
        return self

    def set_memory_efficient(self, enable: bool = True):
        set_memory_efficient(self, enable)
        return self
