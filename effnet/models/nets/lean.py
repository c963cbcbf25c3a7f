"""Lean CPU training: hand-written autograd kernels that recompute in backward what plain autograd stores.

What it is for: a lower memory peak when training (``model.set_memory_efficient()``, ``effnet train
--memory-efficient``) and a faster bf16-autocast step on CPU, with the same parameters, state dict, gradients and
BatchNorm statistics as the plain layers of :mod:`effnet.models.nets.layers`. Eval and export never reach it.

- SiLU that keeps only its input (:class:`MemoryEfficientSiLU`, lukemelas' MemoryEfficientSwish);
- SE gating that keeps the small gate logits (:func:`gate_memory_efficient`);
- training-mode BatchNorm + SiLU/ReLU6 that keeps only the BatchNorm input (:func:`batchnorm_act`, ConvBNAct's
  lean path);
- MBConv's expansion BatchNorm + activation + depthwise conv that keeps only the expansion conv's output
  (:func:`fused_expand_depthwise`, for the big early blocks);
- EfficientNetV2's Fused-MBConv and one-conv blocks take the same kernels through their layers: each k x k
  ConvBNAct's BatchNorm + activation through :func:`batchnorm_act`, the SE gating through
  :func:`gate_memory_efficient`. They have no depthwise conv, so there is no expansion to fuse into one (their
  expansion *is* the k x k conv, whose output is what :func:`batchnorm_act` keeps) and no depthwise backward to run
  in float32;
- under bf16 autocast (switch or not), the depthwise backward in float32 a few images at a time, where oneDNN's
  bf16 one is slow (:func:`depthwise_fp32_backward`, DepthwiseConv2d's training path).

Why hand-written: only the SiLU has a library twin (timm's SwishMe, the same few lines); no library has the
others -- PyTorch and oneDNN fuse neither BatchNorm + activation nor those + the depthwise conv for CPU training,
and gradient checkpointing recomputes the convs as well, where these recompute one multiply-add per element.

This module knows no layer classes (``layers`` imports it): the layers with a lean path subclass
:class:`HasLeanPath`, whose flag :func:`set_memory_efficient` turns on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HasLeanPath:
    """A layer with a lean-training path, taken while ``memory_efficient`` is set (by :func:`set_memory_efficient`)."""

    memory_efficient: bool = False


def set_memory_efficient(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Swap SiLU for :class:`MemoryEfficientSiLU` and switch every :class:`HasLeanPath` layer (ConvBNAct's
    BatchNorm + activation, SE gating) to the kernels here -- or, ``enabled=False``, back to plain ops."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if enabled and isinstance(child, nn.SiLU):
                setattr(module, name, MemoryEfficientSiLU())
            elif not enabled and isinstance(child, MemoryEfficientSiLU):
                setattr(module, name, nn.SiLU(inplace=True))
        if isinstance(module, HasLeanPath):
            module.memory_efficient = enabled
    return model


# --- SiLU and SE gating ---------------------------------------------------------------------------------------

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


class _GlobalPoolFn(torch.autograd.Function):
    """``adaptive_avg_pool2d(x, 1)`` whose backward hands back ``grad / (H*W)`` *broadcast* over H x W, a view.

    torch's own backward writes the full-size gradient in NCHW order whatever ``x``'s layout; in the SE, ``x`` also
    gets the gate's gradient in channels-last order, and autograd adds the two element by element across layouts:
    12x the time of a same-layout add (bf16, 16 x 144 x 56 x 56: 17.9 against 1.5 ms, AMD EPYC). The gradient's
    values are torch's (one division per pooled gradient, in its dtype).

    Forward of a channels-last bf16 tensor on the CPU: ``avg_pool2d`` over the whole H x W, torch's kernel for
    pooling windows, which sums it in place; ``adaptive_avg_pool2d`` (a ``mean``) first copies it to float32 (same
    shape: 0.35 against 7.2 ms; B0's SE inputs gave the same bf16 values, another summation order may differ by one
    rounding). Elsewhere (float32, NCHW, fp16, other devices) ``avg_pool2d`` was not faster or not measured: torch's
    op stays."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        if x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last):
            return F.avg_pool2d(x, x.shape[-2:])
        return F.adaptive_avg_pool2d(x, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return (grad / (ctx.shape[-1] * ctx.shape[-2])).expand(ctx.shape)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """The SE's squeeze: ``adaptive_avg_pool2d(x, 1)``, with a broadcast backward where gradients are recorded
    (never while tracing: an exported graph keeps torch's op, ONNX's GlobalAveragePool)."""
    if torch.is_grad_enabled() and x.requires_grad and not torch.jit.is_tracing():
        return _GlobalPoolFn.apply(x)
    return F.adaptive_avg_pool2d(x, 1)


# --- BatchNorm + activation -----------------------------------------------------------------------------------

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


# --- MBConv's expansion into its depthwise conv ---------------------------------------------------------------

class _BatchNormActDepthwiseFn(torch.autograd.Function):
    """Training-mode BatchNorm -> SiLU/ReLU6 -> depthwise conv (MBConv's expansion output into its k x k conv)
    that stores only the BatchNorm input.

    :class:`_BatchNormActFn` still leaves the activation output behind, saved by the depthwise conv for its
    weight gradient: an expanded-width tensor per block (B0's first 112-px block at batch 16: 38.5 MB in
    bf16). Here backward rebuilds it a few images at a time from the conv output and the batch statistics,
    and runs the depthwise backward on each slice -- in float32 where oneDNN's bf16 depthwise backward is slow
    (see :class:`_DepthwiseFn`). Hand-written: no library fuses these three for CPU training.
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


def fused_expand_depthwise(expand: nn.Module, dw: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``dw(expand(x))`` for two ConvBNActs on their lean path (MBConv's 1x1 expansion and unpadded k x k
    depthwise conv, on CPU): for a large expansion output the expansion's BatchNorm + activation and the depthwise
    conv run through :class:`_BatchNormActDepthwiseFn`, which does not store that output."""
    z = expand.conv(x)
    if z.numel() * z.element_size() < LEAN_FUSE_MIN_BYTES:
        return dw(batchnorm_act(z, expand.bn, expand.act_name()))
    bn, conv = expand.bn, dw.conv
    h = _BatchNormActDepthwiseFn.apply(z, bn.weight, bn.bias, bn.running_mean, bn.running_var, _step_momentum(bn),
                                       bn.eps, expand.act_name(), conv.weight, conv.stride, conv.padding)
    return batchnorm_act(h, dw.bn, dw.act_name())


# --- bf16 depthwise conv with a float32 backward --------------------------------------------------------------

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


def depthwise_fp32_backward(x: torch.Tensor, weight: torch.Tensor, stride: tuple, padding: tuple) -> torch.Tensor:
    """The depthwise conv of ``x`` in bf16, its backward computing both gradients in float32 (:class:`_DepthwiseFn`)."""
    return _DepthwiseFn.apply(x.to(torch.bfloat16), weight, stride, padding)
