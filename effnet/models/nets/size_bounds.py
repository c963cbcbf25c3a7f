"""What a config asks for, computed from its numbers alone, before anything is built (the first two steps of
:func:`effnet.models.nets.size.check_size`):

1. counts (:func:`layer_count`): the blocks after depth scaling, the BiFPN nodes and head layers of a detector --
   the loops a build runs -- from the scaled stage table, in time proportional to the number of table rows;
2. lower bounds (:func:`lower_bounds`): the weights of the big convolutions and the outputs of the layers at the
   config's resolution, in Python integers (no overflow), so that no shape past the limits reaches torch.

Each number is checked first (:func:`whole`): a count from 0 to 2**62, a multiplier finite. Each config type is
counted by its own entry of :data:`_KINDS` (a classifier, an EfficientDet, a segmenter), looked up by its type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ...errors import UsageError
from .config import ModelConfig, scale
from .detector_config import DetectorConfig
from .segmenter_config import OUTPUT_STRIDE, SegmenterConfig
from .size_labels import finite, is_number, label, number

# the largest count any torch shape takes (int64), and so any config field
LARGEST = 2**62


def whole(config, path: str, value: Any, low: int = 0) -> int:
    """A count the bounds compute with, as a Python integer (no overflow): a number from ``low`` to 2**62."""
    if not finite(value) or not low <= value <= LARGEST:
        got = number(value) if is_number(value) else repr(value)
        raise UsageError(f"{config.name}: {path} must be a number from {low} to {number(LARGEST)}, got {got}")
    return int(value)


def knows(config) -> bool:
    """Whether ``config`` is of a type counted here (a task registered later with a config of its own is not)."""
    return type(config) in _KINDS


def backbone_of(config) -> ModelConfig:
    """The EfficientNet a network is built on: a classifier's is its own config."""
    return _KINDS[type(config)].backbone(config)


def side_of(config, resolution: int | None) -> int:
    """The input side a config is measured at: ``resolution`` or the config's, up to the multiple its predictor
    pads every image to (a segmenter's output stride)."""
    side = whole(config, "resolution", config.resolution if resolution is None else resolution, 1)
    multiple = _KINDS[type(config)].side_multiple
    return -(-side // multiple) * multiple


def scaled(config):
    """The backbone's scaled table (``config.scale``), its numbers checked first: ``scale`` divides and rounds
    with them."""
    backbone = backbone_of(config)
    prefix = "" if backbone is config else "backbone."
    for name in ("width_mult", "depth_mult", "round_limit"):
        value = getattr(backbone, name)
        if not finite(value):
            raise UsageError(f"{config.name}: {prefix}{name} must be a finite number, got {value!r}")
    whole(config, prefix + "depth_divisor", backbone.depth_divisor, 1)
    for name in ("stem_channels", "head_channels"):
        whole(config, prefix + name, getattr(backbone, name), 1)
    for i, row in enumerate(backbone.blocks):
        for name in ("expand_ratio", "kernel_size", "stride", "out_channels"):
            whole(config, f"{prefix}blocks[{i}].{name}", getattr(row, name), 1)
        whole(config, f"{prefix}blocks[{i}].repeats", row.repeats)
        if not finite(row.se_ratio):
            raise UsageError(f"{config.name}: {prefix}blocks[{i}].se_ratio must be a finite number, "
                             f"got {row.se_ratio!r}")
    try:
        return scale(backbone)
    except OverflowError:  # width_mult x channels past a float: no network of that size exists
        raise UsageError(f"{label(config)}: its scaled widths and depths overflow (width_mult "
                         f"{backbone.width_mult:g}, depth_mult {backbone.depth_mult:g})") from None


# ------------------------------------------------------------------------------------------ step 1: counts

def layer_count(config, arch) -> int:
    """Blocks, BiFPN nodes (and its extra levels' resamplers) and head layers (per level): the loops a build runs.
    Proportional to the table's rows, never to the counts themselves."""
    blocks = sum(max(0, stage.repeats) for stage in arch.stages)
    return blocks + _KINDS[type(config)].more_layers(config)


def _detector_layers(config: DetectorConfig) -> int:
    levels = _levels(config)
    fpn = whole(config, "fpn_repeats", config.fpn_repeats)
    head = whole(config, "head_repeats", config.head_repeats)
    return max(0, levels - 3) + fpn * 2 * max(0, levels - 1) + 2 * head * levels


def _levels(config: DetectorConfig) -> int:
    low = whole(config, "min_level", config.min_level)
    return max(0, whole(config, "max_level", config.max_level) - low + 1)


# ------------------------------------------------------------------------------------- step 2: lower bounds

def lower_bounds(config, arch, side: int) -> tuple[int, int]:
    """(parameters, activation values) at least: the weights of every convolution and linear layer that matters
    and the outputs of the main layers, in Python integers. Exact enough to refuse what the meta build would
    overflow on; the measured numbers come from the build."""
    return _KINDS[type(config)].bounds(config, arch, side)


def _classifier_bounds(config: ModelConfig, arch, side: int) -> tuple[int, int]:
    params, acts, _ = _encoder(config, config, arch, side, features=False)
    return params, acts


def _detector_bounds(config: DetectorConfig, arch, side: int) -> tuple[int, int]:
    params, acts, channels = _encoder(config, config.backbone, arch, side, features=True)
    more = _detector(config, side, channels[-1][2] if channels else arch.stem_channels)
    return params + more[0], acts + more[1]


def _segmenter_bounds(config: SegmenterConfig, arch, side: int) -> tuple[int, int]:
    taps = tuple(whole(config, f"taps[{i}]", t) for i, t in enumerate(config.taps))
    params, acts, channels = _encoder(config, config.backbone, arch, side, features=True,
                                      last_block=max(taps, default=0))
    more = _segmenter(config, side, arch.stem_channels, _tap_channels(channels, taps))
    return params + more[0], acts + more[1]


def _halved(side: int, times: int) -> int:
    """The side after ``times`` stride-2 steps (each rounds up, as every padded conv and pool here does)."""
    return -(-side // (1 << min(times, 4096)))


def _encoder(config, c: ModelConfig, arch, side: int, features: bool, last_block: int | None = None):
    """A classifier's (or a feature backbone's) bounds, and (first block index, blocks, output channels) of each
    stage. The head conv and the classifier are built even for a feature backbone (then dropped), so their weights
    count; their outputs only when they run. A segmenter's encoder runs up to its last tapped block."""
    prefix = "" if c is config else "backbone."
    in_chans = whole(config, prefix + "in_chans", c.in_chans, 1)
    num_classes = whole(config, prefix + "num_classes", c.num_classes)
    stages, stem, head = arch.stages, arch.stem_channels, arch.head_channels
    h = _halved(side, 1)
    params, acts = in_chans * stem * 9, stem * h * h
    channels, index = [], 0
    for s in stages:
        if s.repeats <= 0:
            continue
        first = _block(s, s.in_channels, h, s.stride)
        h_out = -(-h // s.stride)
        rest = _block(s, s.out_channels, h_out, 1)
        params += first[0] + (s.repeats - 1) * rest[0]
        runs = s.repeats if last_block is None else max(0, min(s.repeats, last_block + 1 - index))
        if runs:
            acts += first[1] + (runs - 1) * rest[1]
        channels.append((index, s.repeats, s.out_channels))
        index += s.repeats
        h = h_out
    last = stages[-1].out_channels if stages else stem
    params += last * head + head * num_classes
    if not features:
        acts += head * h * h + num_classes
    return params, acts, channels


def _block(s, in_ch: int, h: int, stride: int) -> tuple[int, int]:
    """One block's weights and outputs (input side ``h``), as blocks.py builds it: MBConv (1x1 expand, k x k
    depthwise, squeeze-excitation, 1x1 project), Fused-MBConv (k x k expand, SE, project) or one conv."""
    k2, out, h_out = s.kernel_size ** 2, s.out_channels, -(-h // stride)
    if s.block == "conv":
        return k2 * in_ch * out, out * h_out * h_out
    mid = in_ch * s.expand_ratio
    se = 2 * mid * max(1, int(in_ch * s.se_ratio)) if s.se_ratio > 0 else 0
    if s.block == "fused":
        return k2 * in_ch * mid + se + mid * out, (mid + out) * h_out * h_out
    expand = in_ch * mid if s.expand_ratio != 1 else 0
    return expand + k2 * mid + se + mid * out, (mid if expand else 0) * h * h + (mid + out) * h_out * h_out


def _tap_channels(channels: list[tuple[int, int, int]], taps: tuple[int, ...]) -> list[int]:
    """The output channels of each tapped block (a tap past the last block: none)."""
    found = []
    for tap in taps:
        found += [ch for start, repeats, ch in channels if start <= tap < start + repeats]
    return found


def _detector(config: DetectorConfig, side: int, backbone_last: int) -> tuple[int, int]:
    """BiFPN (extra levels, 2 (L-1) nodes a cell, each a separable conv) and the class and box nets."""
    c = whole(config, "fpn_channels", config.fpn_channels, 1)
    classes = whole(config, "num_classes", config.num_classes)
    anchors = whole(config, "num_scales", config.num_scales) * len(config.aspect_ratios)
    fpn, head = config.fpn_repeats, config.head_repeats
    low, levels = config.min_level, _levels(config)
    sides = [_halved(side, low + i) for i in range(levels)]
    areas = [h * h for h in sides]
    separable = c * c + 9 * c
    params = (backbone_last != c) * backbone_last * c + fpn * 2 * max(0, levels - 1) * separable
    params += 2 * head * separable + 2 * 9 * c + c * anchors * (classes + 4)
    acts = c * sum(areas[3:]) + fpn * c * (sum(areas[:-1]) + sum(areas[1:]))
    acts += (2 * head * c + anchors * (classes + 4)) * sum(areas)
    return params, acts


def _segmenter(config: SegmenterConfig, side: int, stem: int, taps: list[int]) -> tuple[int, int]:
    """The U-Net decoder (five blocks of two 3x3 convs, coarse to fine) or the FPN (pyramid, segmentation blocks,
    head with its upsampling), and the head's output at the input's size."""
    classes = whole(config, "num_classes", config.num_classes)
    encoder = (stem, *taps)  # strides 2, 4, 8, 16, 32
    area = [_halved(side, i) ** 2 for i in range(6)]  # area[i]: at stride 2**i
    if config.decoder == "unet":
        decoder = [whole(config, f"decoder_channels[{i}]", d, 1) for i, d in enumerate(config.decoder_channels)]
        ins = (encoder[-1], *decoder[:-1])
        skips = (*encoder[-2::-1], 0)
        params = sum(9 * (i + s) * d + 9 * d * d for i, s, d in zip(ins, skips, decoder))
        acts = sum(2 * d * area[4 - j] for j, d in enumerate(decoder))
        return params + 9 * decoder[-1] * classes, acts + classes * area[0]
    p = whole(config, "pyramid_channels", config.pyramid_channels, 1)
    s = whole(config, "segmentation_channels", config.segmentation_channels, 1)
    up = whole(config, "upsampling", config.upsampling, 1)
    params = sum(encoder[-4:]) * p + 4 * 9 * p * s + 3 * 9 * s * s + s * classes
    out_side = _halved(side, 2) * up
    acts = p * sum(area[2:6]) + 4 * s * area[2] + classes * (area[2] + out_side * out_side)
    return params, acts


# ------------------------------------------------------------------------------------- each config type

@dataclass(frozen=True)
class _Kind:
    """How one type of config is counted."""

    backbone: Callable[[Any], ModelConfig]  # the EfficientNet it is built on
    more_layers: Callable[[Any], int]  # the layers it adds to the backbone's blocks
    bounds: Callable[[Any, Any, int], tuple[int, int]]  # (config, scaled table, side) -> (parameters, activations)
    side_multiple: int = 1  # its predictor pads every input side to a multiple of this


def _own(config: ModelConfig) -> ModelConfig:
    return config


def _backbone(config: DetectorConfig | SegmenterConfig) -> ModelConfig:
    return config.backbone


def _decoder_layers(config: SegmenterConfig) -> int:
    return len(config.decoder_channels)


_KINDS: dict[type, _Kind] = {
    ModelConfig: _Kind(_own, lambda config: 0, _classifier_bounds),
    DetectorConfig: _Kind(_backbone, _detector_layers, _detector_bounds),
    SegmenterConfig: _Kind(_backbone, _decoder_layers, _segmenter_bounds, side_multiple=OUTPUT_STRIDE),
}
