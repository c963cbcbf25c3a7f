"""How big a network is before it is built: its parameters, its activation memory and its layer count, from its
config alone, and the limits a config must stay under (:func:`check_size`).

A config is data a user may write (a ``.json`` beside ``--model``, a saved file's header), and its numbers build
tensors: ``width_mult`` 1e9 asks for convolutions of 1e23 weights, ``head_channels`` 1e9 for 1.3 TB of them,
``depth_mult`` 1e9 for sixteen billion blocks. Built for real, those end in an allocator's traceback or never end;
even on torch's meta device (shapes without storage) the first overflows int64 and the last loops for hours. So
the check has three steps, each cheap, each only reached when the one before passed:

1. counts (:func:`~effnet.models.nets.size_bounds.layer_count`): the blocks after depth scaling, the BiFPN nodes
   and head layers of a detector -- the loops a build runs -- in time proportional to the stage table's rows;
2. lower bounds (:func:`~effnet.models.nets.size_bounds.lower_bounds`): the weights of the big convolutions and
   the outputs of the layers at the config's resolution, in Python integers (no overflow), so that no shape past
   the limits reaches torch;
3. the network itself (:func:`~effnet.models.nets.size_meta.meta_size`), built on the meta device and run once at
   batch 1 with a hook on every module: its exact parameter count and the float32 bytes of its layers' outputs.
   Nothing is allocated.

Steps 1 and 2 refuse with "at least"; step 3 measures. The limits (:class:`SizeLimits`) are generous -- every
published model is 8x or more under each (the margins are beside the defaults) -- and a user raises them with the
flag each message names (``--max-params``, ``--max-activation-gb``, ``--max-layers``: the command line sets them
once for the process with :func:`set_limits`).

Torch and the networks are imported when a config is measured: ``effnet --help`` reads the limits without them.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field

from ...errors import UsageError
from .config import ModelConfig
from .detector_config import DetectorConfig
from .segmenter_config import SegmenterConfig
from .size_bounds import backbone_of, knows, layer_count, lower_bounds, scaled, side_of
from .size_labels import is_number, label, number
from .size_meta import BYTES_PER_VALUE, GB, ModelSize, meta_size

__all__ = ["CEILINGS", "DEFAULT_LIMITS", "GB", "ModelSize", "SizeLimits", "check_size", "current_limits", "flag_of",
           "set_limits", "size_checked"]

# No flag goes past these: beyond them a limit stops being a limit (4 TB of weights, a petabyte of activations,
# builds that take hours) and shapes near int64's end could still overflow on the meta device.
CEILINGS = {"max_params": 1e12, "max_activation_gb": 1e6, "max_layers": 100_000}


def _limit_field(default: float, what: str):
    return field(default=default, metadata={"help": what})


@dataclass(frozen=True)
class SizeLimits:
    """What a config may ask for. Each field is a command-line flag of the same name (``max_params`` is
    ``--max-params``), which every message over that limit names."""

    # EfficientNet-L2, the largest published model, has 480 M parameters: 8x under
    max_params: float = _limit_field(4e9, "most parameters a model may have")
    # the float32 outputs of all layers at batch 1 at the model's resolution (about what training keeps per image
    # for backward): EfficientDet-D7x at 1536 px with TF padding has 26.2 GB, 38x under
    max_activation_gb: float = _limit_field(1000.0, "most GB of layer outputs at batch 1 (float32)")
    # blocks, BiFPN nodes and head layers: EfficientDet-D7x has 198, EfficientNetV2-XL 100: 10x under
    max_layers: int = _limit_field(2000, "most layers (blocks, BiFPN nodes, head layers) a model may have")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, ceiling = getattr(self, f.name), CEILINGS[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= ceiling:
                got = number(value) if is_number(value) else repr(value)
                raise UsageError(f"{flag_of(f.name)} must be above 0 and at most {number(ceiling)}, got {got}")


DEFAULT_LIMITS = SizeLimits()


def flag_of(limit: str) -> str:
    """The command-line flag that sets ``limit`` (a field of :class:`SizeLimits`)."""
    return "--" + limit.replace("_", "-")


# The limits check_size uses when given none: the command line sets them once per process (its flags); a library
# user may too. A lock, since a server builds models in several threads.
_limits_lock = threading.Lock()
_limits = DEFAULT_LIMITS


def set_limits(limits: SizeLimits) -> None:
    """The limits :func:`check_size` applies from now on in this process when called without its own."""
    global _limits
    with _limits_lock:
        _limits = limits


def current_limits() -> SizeLimits:
    with _limits_lock:
        return _limits


def check_size(config: ModelConfig | DetectorConfig | SegmenterConfig, limits: SizeLimits | None = None,
               resolution: int | None = None, measure: bool = True) -> ModelSize | None:
    """The size of the network ``config`` builds (at ``resolution``, default the config's), or a
    :class:`UsageError` of one line naming the number, the limit and the flag that raises it -- before anything is
    allocated. ``limits`` default to the process's (:func:`set_limits`, the command line's flags).

    ``measure=False`` stops after the counts and lower bounds (microseconds, returns None): enough for a caller
    that builds on the meta device itself (:func:`size_checked` there: ``effnet info``, ``family``), where only an
    overflow or an endless loop is to fear.
    A config of a type this module does not know (a task registered later) is not checked: None."""
    if not knows(config):
        return None
    limits = current_limits() if limits is None else limits
    side = side_of(config, resolution)
    arch = scaled(config)
    layers = layer_count(config, arch)
    if layers > limits.max_layers:
        raise _over(config, limits, "max_layers", layers, "{} layers")
    params, activations = lower_bounds(config, arch, side)
    _check_measures(config, limits, params, activations * BYTES_PER_VALUE, side, "at least ")
    if not measure:
        return None
    size = meta_size(config, side, layers)
    _check_measures(config, limits, size.built_params, size.activation_bytes, side, "", kept=size.params)
    return size


def size_checked(config):
    """``config``, once :func:`check_size` has passed it with the process's limits, for a caller about to build
    it. On the meta device (torch's default device: ``effnet info`` and ``family`` count shapes there) the build
    allocates nothing, so the counts and lower bounds suffice -- what would overflow int64 or never end -- and
    the measurement's own meta build is skipped."""
    import torch  # the caller builds next: torch is loaded

    check_size(config, measure=torch.get_default_device().type != "meta")
    return config


def _check_measures(config, limits: SizeLimits, params: int, activation_bytes: int, side: int, qualifier: str,
                    kept: int | None = None):
    """``params``: what the build makes (a detector's or segmenter's backbone builds a classifier's head and drops
    it: a head of 1e9 channels must be refused too); ``kept``, when known, what the model keeps."""
    if params > limits.max_params:
        built = " built" if backbone_of(config) is not config else ""
        also = f" ({number(kept)} kept)" if kept is not None and kept != params else ""
        raise _over(config, limits, "max_params", params, f"{qualifier}{{}} parameters{built}{also}")
    if activation_bytes > limits.max_activation_gb * GB:
        raise _over(config, limits, "max_activation_gb", activation_bytes,
                    f"{qualifier}{{}} GB of activations at {number(side)} px, batch 1", per=GB)


def _over(config, limits: SizeLimits, limit: str, value: int, what: str, per: float = 1) -> UsageError:
    """One line: the config, ``what`` with ``value / per`` in it, the limit and its flag; with as many digits as
    it takes for the number and the limit to read differently."""
    cap = getattr(limits, limit)
    for digits in (3, 6, 9, 15):
        shown, allowed = number(value, per, digits), number(cap, 1, digits)
        if shown != allowed:
            break
    unit = " GB" if limit == "max_activation_gb" else ""
    return UsageError(f"{label(config)}: {what.format(shown)}, over the limit of {allowed}{unit} ({flag_of(limit)})")
