"""Semantic segmentation's architecture as data: U-Net and FPN decoders on any effnet classifier's feature
backbone, laid out as segmentation_models_pytorch (smp) lays them, and the frozen :class:`SegmenterConfig` saved
with every segmenter. No torch here: ``effnet list`` reads the names without it.

The encoder hands the decoder five feature maps, at strides 2, 4, 8, 16 and 32, as smp's EfficientNet encoders
do: the stem's output (stride 2), then the outputs of the blocks listed in ``taps``. By default a tap is the last
block at its stride (smp's ``timm-efficientnet-*`` and ``timm-tf_efficientnet_lite*`` encoders); an imported
smp ``efficientnet-bX`` model (lukemelas' EfficientNet-PyTorch) brings its own list -- smp takes B0's stride-16
map after the first block of stage 5, not the last (``out_indexes = [2, 4, 8, 15]``), and a faithful import
must too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...errors import UnknownModelError, UsageError
from .config import ModelConfig, SavedConfig, scale
from .families import CLASSIFIERS, classifier_config, classifier_name

DECODERS = ("unet", "fpn")
OUTPUT_STRIDE = 32  # input sides must be multiples of this (the encoder halves them five times)
# smp's defaults (Unet: decoder_channels; FPN: pyramid / segmentation channels, Dropout2d, x4 upsampling head)
UNET_CHANNELS = (256, 128, 64, 32, 16)
FPN_PYRAMID, FPN_SEGMENTATION, FPN_DROPOUT, FPN_UPSAMPLING = 256, 128, 0.2, 4


def segmenter_names() -> tuple[str, ...]:
    """Every segmenter name: ``unet_<classifier>`` and ``fpn_<classifier>`` for each classifier."""
    return tuple(f"{decoder}_{name}" for decoder in DECODERS for name in CLASSIFIERS)


def is_segmenter_name(name: Any) -> bool:
    return isinstance(name, SegmenterConfig) or (isinstance(name, str) and name.split("_", 1)[0] in DECODERS
                                                 and "_" in name)


def default_taps(backbone: ModelConfig) -> tuple[int, ...]:
    """The global indices of the last block at strides 4, 8, 16 and 32 (smp's timm encoders' stage ends)."""
    last_at: dict[int, int] = {}
    stride, index = 2, -1
    for stage in scale(backbone).stages:
        stride *= stage.stride
        index += stage.repeats
        last_at[stride] = index
    missing = [s for s in (4, 8, 16, 32) if s not in last_at]
    if missing:
        raise UsageError(f"{backbone.name}: no block at stride {missing[0]}; a segmenter's encoder needs strides "
                         "2 to 32")
    return tuple(last_at[s] for s in (4, 8, 16, 32))


@dataclass(frozen=True)
class SegmenterConfig(SavedConfig):
    """Everything needed to rebuild a segmenter; stored with every checkpoint (JSON, ``kind`` marks it)."""

    name: str = "unet_efficientnet_b0"
    decoder: str = "unet"  # "unet" or "fpn"
    backbone: ModelConfig = dataclasses.field(default_factory=lambda: classifier_config("efficientnet_b0"))
    taps: tuple[int, ...] = (2, 4, 10, 15)  # blocks whose outputs are the stride 4/8/16/32 features
    num_classes: int = 21
    class_names: tuple[str, ...] | None = None
    resolution: int = 256
    decoder_channels: tuple[int, ...] = UNET_CHANNELS  # U-Net: one per decoder block, coarse to fine
    pyramid_channels: int = FPN_PYRAMID  # FPN
    segmentation_channels: int = FPN_SEGMENTATION  # FPN
    decoder_dropout: float = FPN_DROPOUT  # FPN (Dropout2d after merging the pyramid)
    upsampling: int = FPN_UPSAMPLING  # FPN: its head predicts at stride 4 and upsamples
    kind: str = "segmenter"

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise UsageError(f"unknown decoder {self.decoder!r}; expected one of {', '.join(DECODERS)}")
        if len(self.taps) != 4:
            raise UsageError(f"a segmenter taps 4 blocks (strides 4, 8, 16, 32), got {len(self.taps)}")
        if self.decoder == "unet" and len(self.decoder_channels) != 5:
            raise UsageError(f"a U-Net has 5 decoder blocks, got {len(self.decoder_channels)} decoder_channels")

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.backbone.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.backbone.std

    @property
    def activation(self) -> str:
        return self.backbone.activation

    @property
    def bn_momentum(self) -> float:
        """The encoder's (the training loop sets one momentum for every BatchNorm of a run)."""
        return self.backbone.bn_momentum

    @property
    def in_chans(self) -> int:
        return self.backbone.in_chans

    # what a classifier's eval transform reads (export checks on real photos): the whole image, resized bilinearly
    crop_pct = 1.0
    interpolation = "bilinear"

    @staticmethod
    def from_dict(data: dict[str, Any]) -> SegmenterConfig:
        unknown = SegmenterConfig.unknown_fields(data)
        if unknown:
            raise UsageError(f"not a segmenter config (unknown fields: {', '.join(unknown)})")
        data = dict(data)
        data["backbone"] = ModelConfig.from_dict(data["backbone"])
        for key in ("taps", "decoder_channels", "class_names"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return SegmenterConfig(**data)


def segmenter_config(name: str, num_classes: int = 21) -> SegmenterConfig:
    """The config of ``unet_<classifier>`` / ``fpn_<classifier>`` (any spelling of the classifier: ``unet_b0``,
    ``fpn_tf_efficientnet_lite0``). Native resolution: the classifier's, rounded up to a multiple of 32."""
    decoder, _, encoder = name.partition("_")
    if decoder not in DECODERS or classifier_name(encoder) not in CLASSIFIERS:
        raise UnknownModelError(f"unknown segmenter {name!r}: expected unet_<classifier> or fpn_<classifier>, "
                                f"e.g. unet_efficientnet_b0, fpn_efficientnet_lite0 (`effnet list` lists them)")
    backbone = classifier_config(encoder).replace(num_classes=0)
    resolution = -(-backbone.resolution // OUTPUT_STRIDE) * OUTPUT_STRIDE
    canonical = f"{decoder}_{classifier_name(encoder)}" if not encoder.startswith("tf_") else name
    return SegmenterConfig(name=canonical, decoder=decoder, backbone=backbone, taps=default_taps(backbone),
                           num_classes=num_classes, resolution=resolution)
