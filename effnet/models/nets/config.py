"""Architecture as data: the paper's B0 table, the scaling table, and the one function that scales.

Everything here is plain, frozen dataclasses so a config can be saved next to weights (JSON)
and an override with an unknown field is an error (``dataclasses.replace``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from ...errors import UnknownModelError, UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite is quantization-friendly: inputs are (x*255 - 127) / 128 (official lite/README).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
# TensorFlow's [-1, 1] input scaling: timm's and effdet's ports of the AdvProp and Lite checkpoints
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)


# The block kinds a stage can be made of (models/nets/blocks.py builds them), with timm's block-string codes:
# "mbconv" 1x1 expand -> kxk depthwise -> SE -> 1x1 project (EfficientNet, V2's later stages; timm "ir"/"ds");
# "fused" Fused-MBConv, kxk expand conv -> SE -> 1x1 project (EfficientNetV2 section 3.2; timm "er");
# "conv"  one kxk conv + BN + act with a residual, what the V2 paper's "Fused-MBConv1" is in the official code
#         (no separate projection at expansion 1; timm "cn ... skip", torchvision's FusedMBConv(expand_ratio=1)).
BLOCK_KINDS = {"mbconv": "ir", "fused": "er", "conv": "cn"}
_KIND_OF_CODE = {"ir": "mbconv", "ds": "mbconv", "er": "fused", "cn": "conv"}


@dataclass(frozen=True)
class BlockArgs:
    """One row of the paper's Table 1 (a stage of identical blocks), *unscaled*.

    ``out_channels`` and ``repeats`` are the unscaled values; :func:`scale` applies width/depth.
    ``stride`` applies to the first block of the stage only; ``block`` is one of :data:`BLOCK_KINDS`.
    """

    expand_ratio: int
    kernel_size: int
    stride: int
    out_channels: int
    repeats: int
    se_ratio: float = 0.25
    block: str = "mbconv"

    def __post_init__(self) -> None:
        if self.block not in BLOCK_KINDS:
            raise ValueError(f"unknown block kind {self.block!r}; expected one of {', '.join(BLOCK_KINDS)}")

    def to_string(self) -> str:
        """timm-style block string, e.g. ``ir_r2_k3_s2_e6_c24_se0.25`` (``er_``: Fused-MBConv, ``cn_``: conv)."""
        s = (f"{BLOCK_KINDS[self.block]}_r{self.repeats}_k{self.kernel_size}_s{self.stride}_e{self.expand_ratio}"
             f"_c{self.out_channels}")
        return s + (f"_se{self.se_ratio:g}" if self.se_ratio > 0 else "")

    @staticmethod
    def from_string(text: str) -> "BlockArgs":
        """Parse a timm-style block string (``ir``/``ds``/``er``/``cn`` prefix, r/k/s/e/c/se fields)."""
        parts = text.split("_")
        if parts[0] not in _KIND_OF_CODE:
            raise ValueError(f"block string {text!r}: only {', '.join(_KIND_OF_CODE)} blocks are supported")
        values: dict[str, str] = {}
        for p in parts[1:]:
            if p in ("skip", "noskip"):  # timm's residual switch: effnet adds one wherever shapes allow
                continue
            key = "se" if p.startswith("se") else p[0]
            values[key] = p[len(key):]
        try:
            return BlockArgs(
                expand_ratio=int(values.get("e", "1")),
                kernel_size=int(values["k"]),
                stride=int(values.get("s", "1")),
                out_channels=int(values["c"]),
                repeats=int(values.get("r", "1")),
                se_ratio=float(values.get("se", "0")),
                block=_KIND_OF_CODE[parts[0]],
            )
        except KeyError as exc:
            raise ValueError(f"block string {text!r}: missing field {exc}") from None


# Paper, Table 1 (EfficientNet-B0 baseline). Stage 1 (stem conv3x3/32) and stage 9 (head conv1x1/1280,
# pool, FC) are ModelConfig.stem_channels / head_channels; these are stages 2-8.
B0_STAGES: tuple[BlockArgs, ...] = (
    BlockArgs(expand_ratio=1, kernel_size=3, stride=1, out_channels=16, repeats=1),
    BlockArgs(expand_ratio=6, kernel_size=3, stride=2, out_channels=24, repeats=2),
    BlockArgs(expand_ratio=6, kernel_size=5, stride=2, out_channels=40, repeats=2),
    BlockArgs(expand_ratio=6, kernel_size=3, stride=2, out_channels=80, repeats=3),
    BlockArgs(expand_ratio=6, kernel_size=5, stride=1, out_channels=112, repeats=3),
    BlockArgs(expand_ratio=6, kernel_size=5, stride=2, out_channels=192, repeats=4),
    BlockArgs(expand_ratio=6, kernel_size=3, stride=1, out_channels=320, repeats=1),
)
# EfficientNet-Lite: the same table without squeeze-excitation (SE hurts int8 accelerators).
LITE_STAGES: tuple[BlockArgs, ...] = tuple(dataclasses.replace(b, se_ratio=0.0) for b in B0_STAGES)

# The official (rounded) coefficient table: name -> (width_mult, depth_mult, resolution, dropout).
# B1-B7 come from this table, not from the raw alpha/beta/gamma rule (the authors rounded them).
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2),
    "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 260, 0.3),
    "efficientnet_b3": (1.2, 1.4, 300, 0.3),
    "efficientnet_b4": (1.4, 1.8, 380, 0.4),
    "efficientnet_b5": (1.6, 2.2, 456, 0.4),
    "efficientnet_b6": (1.8, 2.6, 528, 0.5),
    "efficientnet_b7": (2.0, 3.1, 600, 0.5),
    "efficientnet_l2": (4.3, 5.3, 800, 0.5),  # Noisy Student (Xie et al. 2020)
    # Official efficientnet/lite/efficientnet_lite_builder.py
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}

# Paper's compound-scaling coefficients (section 3.3, found by grid search at phi=1): their one home. compound()'s
# defaults, the search's reference (effnet.search.PAPER), its verdict and `effnet study`'s defaults derive from these.
PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA = 1.2, 1.1, 1.15


class SavedConfig:
    """What every saved config (a classifier's, a detector's, a segmenter's: frozen dataclasses) does the same way:
    ``replace`` (``dataclasses.replace``; an unknown field raises TypeError), ``to_dict`` / ``to_json``, and the
    check of a stored dict's fields before it is read back."""

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def unknown_fields(cls, data: dict[str, Any]) -> list[str]:
        """The keys of ``data`` that are not fields of this config, sorted."""
        return sorted(set(data) - {f.name for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class ModelConfig(SavedConfig):
    """Everything needed to rebuild a model; stored with every checkpoint.

    ``blocks`` is the *unscaled* stage table; ``width_mult``/``depth_mult`` are applied by :func:`scale`.
    ``resolution`` is the native input size in pixels; ``mean``/``std`` are on the [0, 1] pixel scale.
    """

    name: str = "efficientnet_b0"
    width_mult: float = 1.0
    depth_mult: float = 1.0
    resolution: int = 224
    dropout: float = 0.2
    drop_path_rate: float = 0.2
    blocks: tuple[BlockArgs, ...] = B0_STAGES
    stem_channels: int = 32
    head_channels: int = 1280
    scale_stem_head: bool = True  # Lite keeps stem 32 / head 1280 fixed
    fix_first_last_repeats: bool = False  # Lite does not deepen the first and last stage
    activation: str = "silu"  # "silu" (swish) or "relu6" (Lite)
    num_classes: int = 1000
    in_chans: int = 3
    bn_eps: float = 1e-3  # official TF value
    bn_momentum: float = 0.01  # TF decay 0.99 == torch momentum 0.01
    depth_divisor: int = 8
    tf_padding: bool = False  # TensorFlow "SAME" padding, for weights trained in TF
    # with tf_padding: pad as "SAME" would for inputs of this side, whatever the input (lukemelas'
    # Conv2dStaticSamePadding, which smp's efficientnet-bX encoders build at the native resolution)
    tf_padding_size: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875  # eval: resize to resolution / crop_pct, center-crop resolution
    interpolation: str = "bicubic"  # eval resize filter ("bicubic" or "bilinear"), as the weights were evaluated
    class_names: tuple[str, ...] | None = None  # None with 1000 classes means ImageNet
    train_resolution: int | None = None  # the training image size, when not ``resolution`` (EfficientNetV2)
    round_limit: float = 0.9  # width rounding never goes below this fraction (V1's 10% rule; V2's base rule: 0)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "ModelConfig":
        unknown = ModelConfig.unknown_fields(data)
        if unknown:
            raise UsageError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        data = dict(data)
        if "blocks" in data:
            data["blocks"] = tuple(
                BlockArgs.from_string(b) if isinstance(b, str) else BlockArgs(**b) for b in data["blocks"]
            )
        for key in ("mean", "std", "class_names"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return ModelConfig(**data)

    @staticmethod
    def from_json(text: str) -> "ModelConfig":
        return ModelConfig.from_dict(json.loads(text))


def round_filters(filters: int, width_mult: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Scale a channel count by ``width_mult`` and round to a multiple of ``divisor``.

    As the official ``round_filters``: round to the nearest multiple, but never more than 10% below the
    unrounded value (so B3's first stage gets 24 channels, not 16). EfficientNetV2-B0..B3 round without that
    limit (``round_limit=0``: automl's effnetv2 ``round_filters`` has no 10% rule; timm's ``round_limit=0.``).
    """
    scaled = filters * width_mult
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < round_limit * scaled:  # the 10% rule
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth_mult: float) -> int:
    """Scale a stage's layer count by ``depth_mult``, rounding up (official ``round_repeats``)."""
    return int(math.ceil(depth_mult * repeats))


@dataclass(frozen=True)
class StageSpec:
    """A scaled stage: what the model builds. Channels are after width rounding."""

    index: int
    in_channels: int
    out_channels: int
    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    se_ratio: float
    block: str = "mbconv"


@dataclass(frozen=True)
class ScaledArch:
    stem_channels: int
    stages: tuple[StageSpec, ...] = field(default_factory=tuple)
    head_channels: int = 1280


def scale(config: ModelConfig) -> ScaledArch:
    """Apply width/depth multipliers to the unscaled table (paper eq. 3, rounded as the official code)."""
    w, d, div = config.width_mult, config.depth_mult, config.depth_divisor

    def width(channels: int) -> int:
        return round_filters(channels, w, div, config.round_limit)

    stem = width(config.stem_channels) if config.scale_stem_head else config.stem_channels
    stages = []
    in_ch = stem
    last = len(config.blocks) - 1
    for i, b in enumerate(config.blocks):
        out_ch = width(b.out_channels)
        fixed = config.fix_first_last_repeats and i in (0, last)
        repeats = b.repeats if fixed else round_repeats(b.repeats, d)
        stages.append(StageSpec(i, in_ch, out_ch, repeats, b.kernel_size, b.stride, b.expand_ratio, b.se_ratio,
                                b.block))
        in_ch = out_ch
    head = width(config.head_channels) if config.scale_stem_head else config.head_channels
    return ScaledArch(stem_channels=stem, stages=tuple(stages), head_channels=head)


def efficientnet_config(name: str) -> ModelConfig:
    """The config of a named EfficientNet (V1) from :data:`VARIANTS`. Any family, any spelling ("b0", timm's,
    torchvision's): :func:`effnet.models.nets.families.classifier_config`."""
    if name not in VARIANTS:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(VARIANTS)}")
    width, depth, res, dropout = VARIANTS[name]
    crop_pct = res / (res + 32)  # official eval: center crop of image_size out of image_size + 32
    if "lite" in name:
        return ModelConfig(
            name=name, width_mult=width, depth_mult=depth, resolution=res, dropout=dropout,
            drop_path_rate=0.2, blocks=LITE_STAGES, scale_stem_head=False, fix_first_last_repeats=True,
            activation="relu6", mean=LITE_MEAN, std=LITE_STD, crop_pct=crop_pct,
        )
    return ModelConfig(
        name=name, width_mult=width, depth_mult=depth, resolution=res, dropout=dropout,
        drop_path_rate=0.2, crop_pct=crop_pct,
    )


def compound(
    phi: float,
    alpha: float = PAPER_ALPHA,
    beta: float = PAPER_BETA,
    gamma: float = PAPER_GAMMA,
    base: str | ModelConfig = "b0",
    resolution_divisor: int = 8,
) -> ModelConfig:
    """Compound scaling (paper eq. 3): depth ``alpha**phi``, width ``beta**phi``, resolution ``gamma**phi``.

    Works for any real ``phi >= 0``. FLOPs grow by about ``(alpha * beta**2 * gamma**2) ** phi``; the paper
    constrains that base to 2, and a warning is raised when it is more than 10% away. Resolution is the
    base resolution times ``gamma**phi``, rounded to the nearest multiple of ``resolution_divisor`` (8).
    Dropout grows 0.05 per unit of phi from the base's, capped at 0.5 (fits the official 0.2 ... 0.5).

    Note: the named B1-B7 use the official *rounded* table (:data:`VARIANTS`), not this raw rule; e.g.
    ``compound(1)`` has resolution 256 where B1 has 240.
    """
    for label, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not value > 0:
            raise UsageError(f"{label} must be positive, got {value}")
    if phi < 0:
        raise UsageError(f"phi must be >= 0, got {phi}")
    ratio = alpha * beta**2 * gamma**2
    if abs(ratio - 2.0) > 0.2:
        warnings.warn(
            f"alpha*beta^2*gamma^2 = {ratio:.3f} is far from 2: FLOPs will grow by {ratio:.2f}^phi, not 2^phi",
            stacklevel=2,
        )
    if isinstance(base, str):  # a V1 name or its shorthand; any other family's base comes as its config
        base_cfg = efficientnet_config(f"efficientnet_{base}" if f"efficientnet_{base}" in VARIANTS else base)
    else:
        base_cfg = base
    res = base_cfg.resolution * gamma**phi
    res = max(resolution_divisor, int(round(res / resolution_divisor)) * resolution_divisor)
    name = f"{base_cfg.name}-phi{phi:g}-a{alpha:g}-b{beta:g}-g{gamma:g}"
    return base_cfg.replace(
        name=name,
        width_mult=base_cfg.width_mult * beta**phi,
        depth_mult=base_cfg.depth_mult * alpha**phi,
        resolution=res,
        dropout=min(0.5, base_cfg.dropout + 0.05 * phi),
        crop_pct=res / (res + 32),
    )
