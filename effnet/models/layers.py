"""Building blocks: conv+BN+activation, TF "SAME" padding, squeeze-excitation, stochastic depth."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def make_activation(name: str) -> nn.Module:
    if name == "silu":  # a.k.a. swish (paper section 4)
        return nn.SiLU(inplace=True)
    if name == "relu6":  # EfficientNet-Lite
        return nn.ReLU6(inplace=True)
    raise ValueError(f"unknown activation {name!r} (expected 'silu' or 'relu6')")


def same_pad_amount(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total padding TensorFlow's "SAME" adds along one axis of length ``size``."""
    out = -(-size // stride)  # ceil division; stays integer arithmetic so tracing/export sees ints
    return max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class SamePad2d(nn.Module):
    """TensorFlow "SAME" padding for a strided conv: asymmetric, extra pixel at the bottom/right.

    Only strided convs need this (stride 1 with an odd kernel is symmetric and uses the conv's own
    padding). The amount depends on the input size, computed with plain integer arithmetic: for a fixed
    input size an ONNX/TorchScript export sees a constant (static) pad, not a dynamic shape subgraph.
    """

    def __init__(self, kernel_size: int, stride: int, dilation: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph = same_pad_amount(x.shape[-2], self.kernel_size, self.stride, self.dilation)
        pw = same_pad_amount(x.shape[-1], self.kernel_size, self.stride, self.dilation)
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class ConvBNAct(nn.Sequential):
    """(SAME pad) -> Conv2d (no bias) -> BatchNorm -> activation (optional)."""

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
        layers["conv"] = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        layers["bn"] = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        if activation is not None:
            layers["act"] = make_activation(activation)
        super().__init__(OrderedDict(layers))


# Lean training (``model.set_memory_efficient()``): recompute instead of storing.

class _SiLUFn(torch.autograd.Function):
    """SiLU that stores only its input and recomputes sigmoid in backward (lukemelas' MemoryEfficientSwish)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * (s * (1 + x * (1 - s)))


class MemoryEfficientSiLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SiLUFn.apply(x)


class _GateFn(torch.autograd.Function):
    """SE gating ``x * sigmoid(s)`` that keeps the small logits ``s`` instead of sigmoid(s) and the product."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, s)
        return x * torch.sigmoid(s)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, s = ctx.saved_tensors
        sig = torch.sigmoid(s)
        grad_x = grad * sig
        grad_s = (grad * x).sum(dim=(2, 3), keepdim=True) * sig * (1 - sig)
        return grad_x, grad_s


def gate_memory_efficient(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return _GateFn.apply(x, s)


class SqueezeExcite(nn.Module):
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
        # its blocked NCHWc layout (ReduceMean forces layout conversions: ~25% slower B0, measured)
        s = F.adaptive_avg_pool2d(x, 1)
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


def set_memory_efficient(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Swap SiLU and SE gating for the custom-autograd versions above (or back to plain ops)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if enabled and isinstance(child, nn.SiLU):
                setattr(module, name, MemoryEfficientSiLU())
            elif not enabled and isinstance(child, MemoryEfficientSiLU):
                setattr(module, name, nn.SiLU(inplace=True))
        if isinstance(module, SqueezeExcite):
            module.memory_efficient = enabled
    return model
