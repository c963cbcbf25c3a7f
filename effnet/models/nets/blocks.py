"""MBConv, the inverted-residual block of MobileNetV2 with squeeze-excitation (paper section 4, Table 1)."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNAct, DropPath, SqueezeExcite
from .lean import fused_expand_depthwise


class MBConv(nn.Module):
    """1x1 expand (only when expand_ratio != 1) -> kxk depthwise -> SE -> 1x1 linear projection.

    Input (N, in_channels, H, W) -> output (N, out_channels, H/stride, W/stride). The identity shortcut
    and stochastic depth are used only when stride == 1 and in_channels == out_channels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        se_ratio: float,
        drop_path_rate: float = 0.0,
        activation: str = "silu",
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
        tf_padding: bool = False,
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.expand = (
            ConvBNAct(in_channels, mid, 1, activation=activation, **bn) if expand_ratio != 1 else nn.Identity()
        )
        self.dw = ConvBNAct(mid, mid, kernel_size, stride, groups=mid, activation=activation, tf_padding=tf_padding, **bn)
        # Official code: num_reduced_filters = max(1, int(input_filters * se_ratio)) -- the block's input.
        self.se = SqueezeExcite(mid, max(1, int(in_channels * se_ratio)), activation) if se_ratio > 0 else nn.Identity()
        self.project = ConvBNAct(mid, out_channels, 1, activation=None, **bn)  # linear bottleneck
        self.has_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path_rate) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fuses_lean(x):  # the same values; the expansion's output is not stored (lean.py)
            h = fused_expand_depthwise(self.expand, self.dw, x)
        else:
            h = self.dw(self.expand(x))  # 1x1 expansion -> k x k depthwise
        y = self.project(self.se(h))  # squeeze-excitation -> 1x1 linear projection
        if self.has_residual:
            y = self.drop_path(y) + x  # stochastic depth on the residual branch
        return y

    def fuses_lean(self, x: torch.Tensor) -> bool:
        """Lean training on CPU (``set_memory_efficient``): the expansion's BatchNorm + activation and the
        depthwise conv may run as one kernel (:func:`~effnet.models.nets.lean.fused_expand_depthwise`)."""
        return (isinstance(self.expand, ConvBNAct) and self.expand.lean() and self.dw.lean()
                and x.device.type == "cpu" and "pad" not in self.dw._modules)


class FusedMBConv(nn.Module):
    """EfficientNetV2's Fused-MBConv (section 3.2, Figure 2): k x k expansion conv (with the stride) -> SE ->
    1x1 linear projection. The expansion and depthwise convs of MBConv fused into one regular conv: more FLOPs,
    but dense convs use accelerators (and CPU GEMM kernels) far better than depthwise ones at high resolution.
    Lean training runs its BatchNorm + activation pairs through ConvBNAct's lean path; there is no depthwise conv
    to fuse with the expansion, so MBConv's expand-depthwise kernel does not apply."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int,
                 se_ratio: float, drop_path_rate: float = 0.0, activation: str = "silu", bn_eps: float = 1e-3,
                 bn_momentum: float = 0.01, tf_padding: bool = False) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.expand = ConvBNAct(in_channels, mid, kernel_size, stride, activation=activation, tf_padding=tf_padding,
                                **bn)
        self.se = SqueezeExcite(mid, max(1, int(in_channels * se_ratio)), activation) if se_ratio > 0 else nn.Identity()
        self.project = ConvBNAct(mid, out_channels, 1, activation=None, **bn)
        self.has_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path_rate) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.expand(x)))
        return self.drop_path(y) + x if self.has_residual else y


class ConvBlock(nn.Module):
    """One k x k conv + BatchNorm + activation with a residual: the V2 paper's "Fused-MBConv1" as the official
    code builds it (at expansion 1 there is no separate projection), timm's ``cn ... skip`` block."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int,
                 se_ratio: float, drop_path_rate: float = 0.0, activation: str = "silu", bn_eps: float = 1e-3,
                 bn_momentum: float = 0.01, tf_padding: bool = False) -> None:
        super().__init__()
        if expand_ratio != 1 or se_ratio > 0:
            raise ValueError("a conv block has no expansion and no squeeze-excitation (use 'fused')")
        self.conv = ConvBNAct(in_channels, out_channels, kernel_size, stride, activation=activation,
                              tf_padding=tf_padding, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.has_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path_rate) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.drop_path(y) + x if self.has_residual else y


# the module of each block kind a stage table names (config.BLOCK_KINDS)
BLOCKS: dict[str, type[nn.Module]] = {"mbconv": MBConv, "fused": FusedMBConv, "conv": ConvBlock}
