"""The last step of :func:`effnet.models.nets.size.check_size`: the network built on torch's meta device (shapes
without storage) and run once at batch 1 with a hook on every module -- its exact parameter count and the float32
bytes of its layers' outputs, with nothing allocated. Only reached once the counts and lower bounds
(:mod:`effnet.models.nets.size_bounds`) have passed: on the meta device too a shape past int64 overflows and a
billion blocks take hours to build.

Torch and the networks are imported when a config is measured, not with this module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ...errors import UsageError
from .config import ModelConfig
from .detector_config import DetectorConfig
from .segmenter_config import SegmenterConfig
from .size_bounds import backbone_of
from .size_labels import label

BYTES_PER_VALUE = 4  # activations are counted as float32, whatever precision a run later uses
GB = 1e9


@dataclass(frozen=True)
class ModelSize:
    """What a config builds, measured on the meta device."""

    name: str
    params: int  # the model's parameters
    built_params: int  # every parameter its build makes: a feature backbone's head too, which it then drops
    activation_bytes: int  # float32 outputs of every module at batch 1, each tensor once
    largest_activation_bytes: int  # the largest of them
    layers: int  # blocks, BiFPN nodes and head layers (the loops the build runs)
    resolution: int  # the input side it was run at

    @property
    def activation_gb(self) -> float:
        return self.activation_bytes / GB


def meta_size(config, side: int, layers: int) -> ModelSize:
    """The network of ``config`` built on the meta device and run at ``side`` px (``layers``: its count, carried
    into the answer); remembered, since a process builds the same few configs many times -- unless the config
    holds something unhashable."""
    try:
        return _measured(config, side, layers)
    except TypeError:
        return _measure(config, side, layers)


def _networks():
    """Each config type's network (imported here: they load torch)."""
    from .efficientdet import EfficientDet
    from .efficientnet import EfficientNet
    from .segmenter import Segmenter

    return {ModelConfig: EfficientNet, DetectorConfig: EfficientDet, SegmenterConfig: Segmenter}


# the in-place fills a build's initialisation runs (kaiming_normal_, uniform_, zeros_, ones_, trunc_normal_)
_FILLS = frozenset({"normal_", "uniform_", "zero_", "fill_", "mul_", "add_", "erfinv_", "clamp_", "copy_"})


@functools.cache
def _shapes_only():
    """A torch function mode for a build on the meta device: its tensors have shapes and no values, so the in-place
    fills of the initialisation change nothing -- yet torch runs each through a Python decomposition (3 ms a
    kaiming_normal_: a third of B7's measurement). They return their tensor untouched."""
    import torch
    from torch.overrides import TorchFunctionMode

    class ShapesOnly(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if (getattr(func, "__name__", None) in _FILLS and args and isinstance(args[0], torch.Tensor)
                    and args[0].is_meta):
                return args[0]
            return func(*args, **(kwargs or {}))

    return ShapesOnly


def _norms() -> tuple[type, ...]:
    from torch import nn

    from .layers import BATCHNORMS

    return (*BATCHNORMS, nn.GroupNorm)


@functools.lru_cache(maxsize=64)
def _measured(config, side: int, layers: int) -> ModelSize:
    """:func:`_measure`, remembered."""
    return _measure(config, side, layers)


def _measure(config, side: int, layers: int) -> ModelSize:
    """Build the network on the meta device and run it once at batch 1 (eval mode, no autograd), recording every
    module's output tensors once each."""
    import torch
    from torch.nn.modules.module import register_module_parameter_registration_hook

    outputs: dict[int, Any] = {}  # id -> tensor: the tensor is kept so that its id is not reused
    built = [0]

    def record(module, inputs, output) -> None:
        for tensor in output if isinstance(output, (list, tuple)) else (output,):
            if isinstance(tensor, torch.Tensor):
                outputs[id(tensor)] = tensor

    def count(module, name, param) -> None:  # a global hook: another thread's build would add (only) more
        built[0] += 0 if param is None else param.numel()

    norms = _norms()
    try:
        with torch.device("meta"), _shapes_only()():
            counting = register_module_parameter_registration_hook(count)
            try:
                model = _networks()[type(config)](config).eval()
            finally:
                counting.remove()
        for module in model.modules():
            module.register_forward_hook(record)
            if isinstance(module, norms):
                # a norm's output has its input's shape; on the meta device torch computes it through a Python
                # decomposition at 60x a convolution's cost (1.8 ms a BatchNorm: 0.3 s of B7's forward), so the
                # norms of this throwaway model just make a tensor of that shape (their hooks still record it)
                module.forward = torch.empty_like
        x = torch.empty(1, int(backbone_of(config).in_chans), side, side, device="meta")
        with torch.no_grad():
            model(x)
    except UsageError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError) as exc:
        # what the real build would have raised too, as a traceback: a config that makes no network
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(f"{label(config)}: not a network effnet can build ({type(exc).__name__}: {reason})") from None
    sizes = [t.numel() * BYTES_PER_VALUE for t in outputs.values()]
    return ModelSize(name=str(config.name), params=sum(p.numel() for p in model.parameters()), built_params=built[0],
                     activation_bytes=sum(sizes), largest_activation_bytes=max(sizes, default=0), layers=layers,
                     resolution=side)
