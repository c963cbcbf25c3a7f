"""EfficientDet's architecture as data (Tan, Pang & Le, CVPR 2020, Table 1): the scaling table
:data:`DETECTOR_VARIANTS` and the frozen :class:`DetectorConfig` saved with every detector, beside the
classifiers' table in :mod:`effnet.models.nets.config`. No torch here: ``effnet list`` reads the names without it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...errors import UnknownModelError, UsageError
from .config import ModelConfig, SavedConfig
from .families import classifier_config

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
class DetectorConfig(SavedConfig):
    """Everything needed to rebuild a detector; stored with every checkpoint (JSON, ``kind`` marks it)."""

    name: str = "efficientdet_d0"
    backbone: ModelConfig = dataclasses.field(default_factory=lambda: classifier_config("efficientnet_b0"))
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
    def num_levels(self) -> int:
        """Pyramid levels the BiFPN and heads work on: 5 for P3-P7, 6 for D7x's P3-P8."""
        return self.max_level - self.min_level + 1

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

    @staticmethod
    def from_dict(data: dict[str, Any]) -> DetectorConfig:
        unknown = DetectorConfig.unknown_fields(data)
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
    bb = classifier_config(backbone).replace(drop_path_rate=drop_path, num_classes=0, tf_padding=tf_padding)
    return DetectorConfig(name=name, backbone=bb, fpn_channels=width, fpn_repeats=depth, head_repeats=head_depth,
                          resolution=res, anchor_scale=anchor_scale, fusion=fusion, num_classes=num_classes,
                          tf_padding=tf_padding, max_level=max_level)
