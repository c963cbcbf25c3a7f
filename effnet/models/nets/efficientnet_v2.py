"""EfficientNetV2 (Tan & Le, *EfficientNetV2: Smaller Models and Faster Training*, ICML 2021) as data.

The second family on the same network: :class:`~effnet.models.nets.efficientnet.EfficientNet` builds any stage
table, and V2 differs from V1 only in what its rows say -- Fused-MBConv in the early stages (section 3.2: a k x k
expansion conv in place of 1x1 expand + depthwise, faster on accelerators at high resolution), smaller expansion
ratios, 3x3 kernels only, no last 320-channel stage -- and in its scaling rule (section 4.2): the searched
baseline's table (:data:`V2_BASE_STAGES`, B0) is scaled in width and depth like V1 for B1-B3, while S/M/L/XL are
their own tables (scaled from S with the image size capped at 480 and layers added to the later stages). One
row of :data:`V2_VARIANTS` per published model; :func:`v2_config` is the one place a row becomes a config.

Sources of the facts: the paper's Table 4 (V2-S) and the official code (google/automl ``efficientnetv2/
effnetv2_configs.py``: ``v2_base_block`` ... ``v2_xl_block`` and ``efficientnetv2_params`` -- width, depth,
train size, eval size, dropout); timm's ``efficientnetv2_rw_t/s/m``, Ross
Wightman's variants trained in PyTorch before the official code was out (timm ``_gen_efficientnetv2_s``).
No torch here: ``effnet list`` reads the names without it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .config import BlockArgs, ModelConfig


def _row(block: str, expand: int, kernel: int, stride: int, channels: int, layers: int, se: float = 0.0) -> BlockArgs:
    """One stage in the paper's column order (Table 4: operator, stride, channels, layers)."""
    return BlockArgs(expand, kernel, stride, channels, layers, se, block=block)


C, F, M = "conv", "fused", "mbconv"  # "Fused-MBConv1" (one conv), Fused-MBConv, MBConv -- config.BLOCK_KINDS

# official v2_base_block: the searched baseline, EfficientNetV2-B0 (scaled for B1-B3)
V2_BASE_STAGES: tuple[BlockArgs, ...] = (
    _row(C, 1, 3, 1, 16, 1),
    _row(F, 4, 3, 2, 32, 2),
    _row(F, 4, 3, 2, 48, 2),
    _row(M, 4, 3, 2, 96, 3, 0.25),
    _row(M, 6, 3, 1, 112, 5, 0.25),
    _row(M, 6, 3, 2, 192, 8, 0.25),
)
# paper Table 4 (official v2_s_block)
V2_S_STAGES: tuple[BlockArgs, ...] = (
    _row(C, 1, 3, 1, 24, 2),
    _row(F, 4, 3, 2, 48, 4),
    _row(F, 4, 3, 2, 64, 4),
    _row(M, 4, 3, 2, 128, 6, 0.25),
    _row(M, 6, 3, 1, 160, 9, 0.25),
    _row(M, 6, 3, 2, 256, 15, 0.25),
)
V2_M_STAGES: tuple[BlockArgs, ...] = (
    _row(C, 1, 3, 1, 24, 3),
    _row(F, 4, 3, 2, 48, 5),
    _row(F, 4, 3, 2, 80, 5),
    _row(M, 4, 3, 2, 160, 7, 0.25),
    _row(M, 6, 3, 1, 176, 14, 0.25),
    _row(M, 6, 3, 2, 304, 18, 0.25),
    _row(M, 6, 3, 1, 512, 5, 0.25),
)
V2_L_STAGES: tuple[BlockArgs, ...] = (
    _row(C, 1, 3, 1, 32, 4),
    _row(F, 4, 3, 2, 64, 7),
    _row(F, 4, 3, 2, 96, 7),
    _row(M, 4, 3, 2, 192, 10, 0.25),
    _row(M, 6, 3, 1, 224, 19, 0.25),
    _row(M, 6, 3, 2, 384, 25, 0.25),
    _row(M, 6, 3, 1, 640, 7, 0.25),
)
V2_XL_STAGES: tuple[BlockArgs, ...] = (  # "only for 21k pretraining" (official)
    _row(C, 1, 3, 1, 32, 4),
    _row(F, 4, 3, 2, 64, 8),
    _row(F, 4, 3, 2, 96, 8),
    _row(M, 4, 3, 2, 192, 16, 0.25),
    _row(M, 6, 3, 1, 256, 24, 0.25),
    _row(M, 6, 3, 2, 512, 32, 0.25),
    _row(M, 6, 3, 1, 640, 8, 0.25),
)
# timm's efficientnetv2_rw_s: S as drawn in the paper's figure before the code was out -- a first stage of
# Fused-MBConv with a 1x1 projection (not one conv), a 272-channel last stage and a 1792-channel head
V2_RW_STAGES: tuple[BlockArgs, ...] = (_row(F, 1, 3, 1, 24, 2), *V2_S_STAGES[1:5], _row(M, 6, 3, 2, 272, 15, 0.25))
# timm's efficientnetv2_rw_m: rw_s at width 1.2 with per-stage depth (1.2 x4, 1.6 x2), its repeats written out
V2_RW_M_STAGES: tuple[BlockArgs, ...] = tuple(
    replace(b, repeats=r) for b, r in zip(V2_RW_STAGES, (3, 5, 5, 8, 15, 24)))


@dataclass(frozen=True)
class V2Variant:
    """One published EfficientNetV2: its table, scaling, the official training and evaluation sizes and the head's
    dropout. (The official table's RandAugment and mixup columns are not kept here: progressive learning's
    defaults come from the paper's Table 6, in effnet.train.progressive.)"""

    stages: tuple[BlockArgs, ...]
    width: float
    depth: float
    train_size: int
    eval_size: int
    dropout: float
    stem: int = 24
    head: int = 1280
    round_limit: float = 0.9
    crop_pct: float | None = 1.0  # S/M/L/XL are evaluated uncropped; None: V1's crop, size / (size + 32)


# the base family scales stem and head too, with no 10% rounding rule, and is evaluated with V1's crop
_B = dict(stem=32, round_limit=0.0, crop_pct=None)
V2_VARIANTS: dict[str, V2Variant] = {
    "efficientnetv2_b0": V2Variant(V2_BASE_STAGES, 1.0, 1.0, 192, 224, 0.2, **_B),
    "efficientnetv2_b1": V2Variant(V2_BASE_STAGES, 1.0, 1.1, 192, 240, 0.2, **_B),
    "efficientnetv2_b2": V2Variant(V2_BASE_STAGES, 1.1, 1.2, 208, 260, 0.3, **_B),
    "efficientnetv2_b3": V2Variant(V2_BASE_STAGES, 1.2, 1.4, 240, 300, 0.3, **_B),
    "efficientnetv2_s": V2Variant(V2_S_STAGES, 1.0, 1.0, 300, 384, 0.2),
    "efficientnetv2_m": V2Variant(V2_M_STAGES, 1.0, 1.0, 384, 480, 0.3),
    "efficientnetv2_l": V2Variant(V2_L_STAGES, 1.0, 1.0, 384, 480, 0.4, stem=32),
    "efficientnetv2_xl": V2Variant(V2_XL_STAGES, 1.0, 1.0, 384, 512, 0.4, stem=32),
    # timm's own (trained in PyTorch; sizes from its pretrained cfgs: train input_size, test_input_size)
    "efficientnetv2_rw_t": V2Variant(V2_S_STAGES, 0.8, 0.9, 224, 288, 0.2),
    "efficientnetv2_rw_s": V2Variant(V2_RW_STAGES, 1.0, 1.0, 288, 384, 0.2, head=1792),
    "efficientnetv2_rw_m": V2Variant(V2_RW_M_STAGES, 1.2, 1.0, 320, 416, 0.2, head=1792),
}


def v2_config(name: str) -> ModelConfig:
    """The config of a published EfficientNetV2 (a key of :data:`V2_VARIANTS`): trained at ``train_size``,
    evaluated at ``eval_size``, bicubic, ImageNet mean/std, SiLU, BN eps 1e-3."""
    v = V2_VARIANTS[name]
    crop = v.eval_size / (v.eval_size + 32) if v.crop_pct is None else v.crop_pct
    return ModelConfig(
        name=name, width_mult=v.width, depth_mult=v.depth, resolution=v.eval_size, train_resolution=v.train_size,
        dropout=v.dropout, drop_path_rate=0.2, blocks=v.stages, stem_channels=v.stem, head_channels=v.head,
        round_limit=v.round_limit, crop_pct=crop,
    )
