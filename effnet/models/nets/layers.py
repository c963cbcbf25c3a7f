"""Building blocks: conv+BN+activation, TF "SAME" padding, squeeze-excitation, stochastic depth.

These are the paper's layers as plain PyTorch ops. Lean CPU training (``set_memory_efficient``, bf16 autocast)
swaps some of their training steps for the hand-written kernels of :mod:`effnet.models.nets.lean`: each layer with
such a path names it in one call.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .lean import (
    HasLeanPath,
    MemoryEfficientSiLU,
    batchnorm_act,
    depthwise_fp32_backward,
    gate_memory_efficient,
    global_pool,
)

# every BatchNorm layer (torch's common base class, _BatchNorm, is private)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class BNSettings:
    """A model's BatchNorm epsilon and momentum (its config's ``bn_eps`` / ``bn_momentum``), in one place."""

    eps: float
    momentum: float

    @classmethod
    def of(cls, config: Any) -> BNSettings:
        """From a config with ``bn_eps`` and ``bn_momentum`` (ModelConfig, DetectorConfig)."""
        return cls(config.bn_eps, config.bn_momentum)

    def kwargs(self) -> dict[str, float]:
        """As the keyword arguments of :class:`ConvBNAct` and ``MBConv``."""
        return dict(bn_eps=self.eps, bn_momentum=self.momentum)

    def batchnorm(self, channels: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(channels, eps=self.eps, momentum=self.momentum)


def make_activation(name: str) -> nn.Module:
    if name == "silu":  # a.k.a. swish (paper section 4)
        return nn.SiLU(inplace=True)
    if name == "relu6":  # EfficientNet-Lite
        return nn.ReLU6(inplace=True)
    raise ValueError(f"unknown activation {name!r} (expected 'silu' or 'relu6')")


def same_pad_amount(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total padding TensorFlow's "SAME" adds along one axis of length ``size``."""
    # ceil division of positive ints, as integer arithmetic so tracing/export sees ints; not -(-size // stride):
    # traced, that becomes ONNX Div, which truncates, so odd sizes (Lite0's P6 at 320 px) lost their padding
    out = (size + stride - 1) // stride
    return max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class SamePad2d(nn.Module):
    """TensorFlow "SAME" padding for a strided conv: asymmetric, extra pixel at the bottom/right.

    Only strided convs need this (stride 1 with an odd kernel is symmetric and uses the conv's own
    padding). The amount depends on the input size, computed with plain integer arithmetic: for a fixed
    input size an ONNX/TorchScript export sees a constant (static) pad, not a dynamic shape subgraph.
    """

    def __init__(self, kernel_size: int, stride: int, dilation: int = 1, size: int | None = None) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.size = size  # None: pad for each input's own sides; an int: as for an input of that side (static)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = (x.shape[-2], x.shape[-1]) if self.size is None else (self.size, self.size)
        ph = same_pad_amount(h, self.kernel_size, self.stride, self.dilation)
        pw = same_pad_amount(w, self.kernel_size, self.stride, self.dilation)
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class DepthwiseConv2d(nn.Conv2d):
    """A k x k depthwise ``nn.Conv2d`` (same parameters, same state dict) that trains faster under bf16 autocast.

    Why: on CPU, oneDNN's bf16 channels_last depthwise backward is 2-4x slower than its float32 one for 5x5
    kernels and for stride 2 (B0 at batch 16: (144, 56 px, 5x5, stride 2) 313 vs 91 ms; (672, 14 px, 5x5) 122
    vs 92 ms), while the bf16 forward is fast. So those layers run forward in bf16 and compute both gradients
    in float32 from the saved bf16 tensors (also the more exact result). 3x3 stride-1 layers, where oneDNN's
    bf16 backward is the faster one (62 vs 128 ms), stay plain, as does everything without bf16 autocast or
    without gradients (eval, export): then this is exactly ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16 and not torch.jit.is_tracing()
                and (self.kernel_size != (3, 3) or self.stride != (1, 1))):
            return depthwise_fp32_backward(x, self.weight, self.stride, self.padding)
        return super().forward(x)


class ConvBNAct(nn.Sequential, HasLeanPath):
    """(SAME pad) -> Conv2d (no bias) -> BatchNorm -> activation (optional).

    Lean training (:meth:`lean`) runs BatchNorm + activation as one kernel that stores only the conv output.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: str | None = "silu",
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
        tf_padding: bool = False,
    ) -> None:
        layers: dict[str, nn.Module] = {}
        if tf_padding and stride > 1:
            layers["pad"] = SamePad2d(kernel_size, stride)
            padding = 0
        else:
            padding = (kernel_size - 1) // 2
        conv = DepthwiseConv2d if groups > 1 and groups == in_channels == out_channels else nn.Conv2d
        layers["conv"] = conv(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        layers["bn"] = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        if activation is not None:
            layers["act"] = make_activation(activation)
        super().__init__(OrderedDict(layers))
        self.memory_efficient = False

    def lean(self) -> bool:
        """Whether this call runs BatchNorm + activation through :func:`~effnet.models.nets.lean.batchnorm_act`."""
        return (self.memory_efficient and self.bn.training and torch.is_grad_enabled()
                and type(self.bn) is nn.BatchNorm2d and self.act_name() is not None)

    def act_name(self) -> str | None:
        act = getattr(self, "act", None)
        if isinstance(act, nn.ReLU6):
            return "relu6"
        return "silu" if is_silu(act) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.lean():
            return super().forward(x)
        if "pad" in self._modules:
            x = self.pad(x)
        return batchnorm_act(self.conv(x), self.bn, self.act_name())


def is_silu(module: nn.Module | None) -> bool:
    """Whether ``module`` is a SiLU (swish), plain or memory-efficient."""
    return isinstance(module, (nn.SiLU, MemoryEfficientSiLU))


class SqueezeExcite(nn.Module, HasLeanPath):
    """Squeeze-and-excitation (Hu et al. 2018) as in MBConv: pool -> 1x1 reduce -> act -> 1x1 expand -> sigmoid.

    ``channels`` is the expanded width it gates; ``reduced`` comes from the block's *input* width x se_ratio.
    """

    def __init__(self, channels: int, reduced: int, activation: str = "silu") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = make_activation(activation)
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.memory_efficient = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # adaptive_avg_pool2d, not mean(): it exports as ONNX GlobalAveragePool, which ONNX Runtime keeps in
        # its blocked NCHWc layout (ReduceMean forces layout conversions: ~25% slower B0, measured); in training
        # its gradient comes back broadcast, in x's layout (global_pool)
        s = global_pool(x)
        s = self.expand(self.act(self.reduce(s)))
        if self.memory_efficient and torch.is_grad_enabled():
            return gate_memory_efficient(x, s)
        return x * torch.sigmoid(s)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016), the official code's "drop connect": drop the residual branch
    per sample with probability ``rate`` and rescale survivors by 1/(1-rate). Identity in eval mode."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:.4f}"
