"""Inference copies of a model: plain ops, BatchNorm folded, dropout and stochastic depth removed,
channels_last, static TF padding, and torch.compile with frozen weights."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..models.nets.bifpn import HeadNet, SeparableConv
from ..models.nets.layers import ConvBNAct, DropPath, SamePad2d
from ..models.nets.lean import set_memory_efficient


def to_plain_ops(model: nn.Module) -> nn.Module:
    """Undo the lean-training switches: exports need ordinary ops (custom autograd functions do not export)."""
    set_memory_efficient(model, False)
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(False)
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into the conv before it (eval mode statistics), in place: ConvBNAct's, and a
    detector's separable convs and heads (their own ``fold_batchnorm``)."""
    for module in list(model.modules()):
        if isinstance(module, ConvBNAct) and isinstance(getattr(module, "bn", None), nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
        elif isinstance(module, (SeparableConv, HeadNet)):
            module.fold_batchnorm()
    return model


def optimize(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """An inference copy: BatchNorm folded, dropout / stochastic depth removed, plain ops, channels_last.

    Logits equal the original model's (eval mode) within float rounding.
    """
    model = to_plain_ops(copy.deepcopy(model)).eval()
    fold_batchnorm(model)
    for module in model.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, (DropPath, nn.Dropout)):
                setattr(module, name, nn.Identity())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_for_inference(model: nn.Module, bf16: bool = False):
    """``optimize`` + ``torch.compile`` (Inductor, weights frozen as constants) for CPU inference.

    Returns a callable taking an NCHW float batch; the first call compiles (tens of seconds on 2 cores).
    With ``bf16`` it runs under bfloat16 autocast (AVX-512 BF16 / AMX where the CPU has them).
    """
    # freezing folds the weights into the graph as constants: lets Inductor pre-pack conv weights
    fast = torch.compile(optimize(model), options={"freezing": True})

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return fast(x.contiguous(memory_format=torch.channels_last)).float()

    return run


def freeze_same_padding(model: nn.Module, resolution: int) -> nn.Module:
    """Replace TF "SAME" pads, which depend on the input size, by constant pads for ``resolution`` x
    ``resolution`` inputs, so that exports contain a static Pad rather than a shape subgraph."""
    pads: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, SamePad2d):
            hooks.append(module.register_forward_pre_hook(
                lambda m, inp, name=name: pads.__setitem__(name, tuple(inp[0].shape[-2:]))))
    if not hooks:
        return model
    with torch.no_grad():
        model(torch.zeros(1, model.config.in_chans, resolution, resolution))
    for h in hooks:
        h.remove()
    for name, (h, w) in pads.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        same: SamePad2d = getattr(parent, attr)
        padded = same(torch.zeros(1, 1, h, w)).shape
        ph, pw = padded[-2] - h, padded[-1] - w
        setattr(parent, attr, nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))
    return model
