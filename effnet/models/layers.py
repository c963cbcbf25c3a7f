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


class _DepthwiseFn(torch.autograd.Function):
    """Depthwise convolution: forward in bf16, both gradients computed in float32 from the saved bf16 tensors."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: tuple, padding: tuple) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        with torch.autocast("cpu", enabled=False):
            return F.conv2d(x, weight.to(x.dtype), None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        w32 = weight.float()
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(w32) if need_w else None
        # a few images at a time: the float32 copies of x and of its gradient stay ~8 MiB instead of the
        # batch's (B0's first 112-px block at batch 16: 2 x 77 MB at the training step's memory peak)
        step = max(1, (8 << 20) // (x[0].numel() * 4))
        for i in range(0, x.shape[0], step):
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad[i:i + step].float(), x[i:i + step].float(), w32, None, ctx.stride, ctx.padding, (1, 1), False,
                (0, 0), x.shape[1], (need_x, need_w, False))
            if need_x:
                grad_x[i:i + step] = gx
            if need_w:
                grad_w += gw
        return grad_x, (grad_w.to(weight.dtype) if need_w else None), None, None


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
            return _DepthwiseFn.apply(x.to(torch.bfloat16), self.weight, self.stride, self.padding)
        return super().forward(x)


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
        conv = DepthwiseConv2d if groups > 1 and groups == in_channels == out_channels else nn.Conv2d
        layers["conv"] = conv(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        layers["bn"] = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        if activation is not None:
            layers["act"] = make_activation(activation)
        super().__init__(OrderedDict(layers))
        self.memory_efficient = False

    def lean(self) -> bool:
        """Whether this call runs BatchNorm + activation through the memory-efficient function."""
        return (self.memory_efficient and self.bn.training and torch.is_grad_enabled()
                and type(self.bn) is nn.BatchNorm2d and self.act_name() is not None)

    def act_name(self) -> str | None:
        act = getattr(self, "act", None)
        return "relu6" if isinstance(act, nn.ReLU6) else "silu" if isinstance(act, (nn.SiLU, MemoryEfficientSiLU)) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.lean():
            return super().forward(x)
        if "pad" in self._modules:
            x = self.pad(x)
        return batchnorm_act(self.conv(x), self.bn, self.act_name())


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


class _BatchNormActFn(torch.autograd.Function):
    """Training-mode BatchNorm followed by SiLU/ReLU6 that stores only the BatchNorm *input*.

    Plain autograd keeps three tensors of this size per ConvBNAct: the conv output (for BatchNorm's backward),
    the BatchNorm output (for the activation's) and the activation output (for the next layer). The middle
    one is cheap to recompute -- one multiply-add per element -- so backward rebuilds it from the conv output
    and the saved batch statistics. Hand-written because no library fuses BN+activation for CPU training.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float, act: str):
        with torch.autocast("cpu", enabled=False):
            y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps, ctx.act = eps, act
        return F.silu(y, inplace=True) if act == "silu" else F.hardtanh(y, 0.0, 6.0, inplace=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale = weight * invstd
        # the BatchNorm output again, in the activations' dtype: one temporary the size of x
        y = torch.addcmul((bias - mean * scale).view(shape).to(x.dtype), x, scale.view(shape).to(x.dtype))
        if ctx.act == "silu":
            grad_y = torch.ops.aten.silu_backward(grad, y)
        else:
            grad_y = torch.ops.aten.hardtanh_backward(grad, y, 0.0, 6.0)
        del y
        grads = torch.ops.aten.native_batch_norm_backward(
            grad_y.to(x.dtype), x, weight, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3]))
        return (*grads, None, None, None, None, None)


def batchnorm_act(x: torch.Tensor, bn: nn.BatchNorm2d, act: str) -> torch.Tensor:
    """``act(bn(x))`` in training mode through :class:`_BatchNormActFn` (same running-stat updates as ``bn``)."""
    return _BatchNormActFn.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, _step_momentum(bn), bn.eps,
                                 act)


def _step_momentum(bn: nn.BatchNorm2d) -> float:
    """Count the batch and return the running-statistics momentum for it, as ``nn.BatchNorm2d`` does."""
    bn.num_batches_tracked.add_(1)
    return bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)


class _BatchNormActDepthwiseFn(torch.autograd.Function):
    """Training-mode BatchNorm -> SiLU/ReLU6 -> depthwise conv (MBConv's expansion output into its k x k conv)
    that stores only the BatchNorm input.

    :class:`_BatchNormActFn` still leaves the activation output behind, saved by the depthwise conv for its
    weight gradient: an expanded-width tensor per block (B0's first 112-px block at batch 16: 38.5 MB in
    bf16). Here backward rebuilds it a few images at a time from the conv output and the batch statistics,
    and runs the depthwise backward on each slice -- in float32 where oneDNN's bf16 depthwise backward is slow
    (see :class:`DepthwiseConv2d`). Hand-written: no library fuses these three for CPU training.
    """

    @staticmethod
    def forward(ctx, z, bn_weight, bn_bias, running_mean, running_var, momentum: float, eps: float, act: str,
                dw_weight, stride: tuple, padding: tuple):
        with torch.autocast("cpu", enabled=False):
            y, mean, invstd = torch.native_batch_norm(z, bn_weight, bn_bias, running_mean, running_var, True,
                                                      momentum, eps)
            a = F.silu(y, inplace=True) if act == "silu" else F.hardtanh(y, 0.0, 6.0, inplace=True)
            out = F.conv2d(a, dw_weight.to(a.dtype), None, stride, padding, 1, a.shape[1])
        ctx.save_for_backward(z, bn_weight, bn_bias, mean, invstd, dw_weight)
        ctx.eps, ctx.act, ctx.stride, ctx.padding = eps, act, stride, padding
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, gamma, beta, mean, invstd, dw_weight = ctx.saved_tensors
        slow_bf16 = z.dtype == torch.bfloat16 and (dw_weight.shape[-1] != 3 or ctx.stride != (1, 1))
        work = torch.float32 if slow_bf16 else z.dtype  # the depthwise backward's dtype; the rest is float32
        c = (1, -1, 1, 1)
        scale = gamma.float() * invstd
        mean_c, beta_c, scale_c, weight = mean.view(c), beta.float().view(c), scale.view(c), dw_weight.to(work)
        need_w = ctx.needs_input_grad[8]
        grad_w = torch.zeros_like(dw_weight, dtype=torch.float32)
        sum_dy, sum_dy_xc = torch.zeros_like(mean), torch.zeros_like(mean)
        grad_z = torch.empty_like(z)  # holds the BatchNorm output's gradient, then (in place) its input's
        step = max(1, (8 << 20) // (z[0].numel() * 4))
        for i in range(0, z.shape[0], step):
            xc = z[i:i + step].float() - mean_c
            y = torch.addcmul(beta_c, xc, scale_c)  # the BatchNorm output again
            a = F.silu(y) if ctx.act == "silu" else F.hardtanh(y, 0.0, 6.0)
            grad_a, gw, _ = torch.ops.aten.convolution_backward(
                grad[i:i + step].to(work), a.to(work), weight, None, ctx.stride, ctx.padding, (1, 1), False,
                (0, 0), z.shape[1], (True, need_w, False))
            del a
            if ctx.act == "silu":
                dy = torch.ops.aten.silu_backward(grad_a.float(), y)
            else:
                dy = torch.ops.aten.hardtanh_backward(grad_a.float(), y, 0.0, 6.0)
            sum_dy += dy.sum((0, 2, 3))
            sum_dy_xc += (dy * xc).sum((0, 2, 3))
            grad_z[i:i + step] = dy
            if need_w:
                grad_w += gw
        # BatchNorm's backward (training mode) in place, a slice at a time, with per-channel coefficients:
        # dz = gamma*invstd * (dy - mean(dy) - xhat * mean(dy*xhat)), xhat = (z - mean)*invstd, means over N,H,W
        count = z.numel() // z.shape[1]
        k_xc = (-scale * invstd * invstd * sum_dy_xc / count).view(c)
        k_0 = (-scale * sum_dy / count).view(c)
        for i in range(0, z.shape[0], step):
            xc = z[i:i + step].float() - mean_c
            grad_z[i:i + step] = torch.addcmul(torch.addcmul(k_0, xc, k_xc), grad_z[i:i + step].float(), scale_c)
        need_z, need_gamma, need_beta = ctx.needs_input_grad[:3]
        return (grad_z if need_z else None, (sum_dy_xc * invstd).to(gamma.dtype) if need_gamma else None,
                sum_dy.to(beta.dtype) if need_beta else None, None, None, None, None, None,
                grad_w.to(dw_weight.dtype) if need_w else None, None, None)


# The fused path trades ~10 extra passes over its tensor in backward for not storing it: worth it only where the
# tensor is big enough to set the training step's memory peak (B0 at batch 16: the first 112-px block's 38.5 MB).
LEAN_FUSE_MIN_BYTES = 16 << 20


def expand_then_depthwise(expand: nn.Module, dw: ConvBNAct, x: torch.Tensor) -> torch.Tensor:
    """``dw(expand(x))``; in lean training, for a large expansion output, the expansion's BatchNorm +
    activation and the depthwise conv run through :class:`_BatchNormActDepthwiseFn` (its output is not stored)."""
    if not (isinstance(expand, ConvBNAct) and expand.lean() and dw.lean() and x.device.type == "cpu"
            and "pad" not in dw._modules and "pad" not in expand._modules):
        return dw(expand(x))
    z = expand.conv(x)
    if z.numel() * z.element_size() < LEAN_FUSE_MIN_BYTES:
        return dw(batchnorm_act(z, expand.bn, expand.act_name()))
    bn, conv = expand.bn, dw.conv
    h = _BatchNormActDepthwiseFn.apply(z, bn.weight, bn.bias, bn.running_mean, bn.running_var, _step_momentum(bn),
                                       bn.eps, expand.act_name(), conv.weight, conv.stride, conv.padding)
    return batchnorm_act(h, dw.bn, dw.act_name())


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
    """Swap SiLU, SE gating and ConvBNAct's BatchNorm + activation for the custom-autograd versions above
    (or back to plain ops)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if enabled and isinstance(child, nn.SiLU):
                setattr(module, name, MemoryEfficientSiLU())
            elif not enabled and isinstance(child, MemoryEfficientSiLU):
                setattr(module, name, nn.SiLU(inplace=True))
        if isinstance(module, (SqueezeExcite, ConvBNAct)):
            module.memory_efficient = enabled
    return model
