"""How the size checks (:mod:`effnet.models.nets.size`) write a number and name a config in their one-line messages:
"efficientnet_b0 (width_mult 1e+09)" -- the config's name and, when that is a published model's, the numbers it
changed from it, the largest change first -- and 2,001 or 4.8e+08 for numbers of any size, Python integers past
any float included (a lower bound of an absurd config)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ...errors import UnknownModelError, UsageError
from .config import ModelConfig
from .detector_config import DetectorConfig, detector_config
from .families import classifier_config
from .segmenter_config import SegmenterConfig, segmenter_config


def number(x: float, per: float = 1, digits: int = 3) -> str:
    """``x / per`` as people read it: 2,001 below a million, 4.8e+08 above. ``x`` may be an integer past any
    float (a lower bound of an absurd config): its digits are then counted, not converted."""
    if isinstance(x, int) and abs(x) >= 1e300:
        exponent = math.log10(abs(x)) - math.log10(per)
        return f"{'-' if x < 0 else ''}{10 ** (exponent % 1):.{digits}g}e+{int(exponent)}"
    x = x / per
    if float(x).is_integer() and abs(x) < 1e6:
        return f"{int(x):,}"
    return f"{x:.{digits}g}"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(x: Any) -> bool:
    """A number that is not infinite or NaN (an integer of any size is finite)."""
    return is_number(x) and (isinstance(x, int) or math.isfinite(x))


# fields that shape nothing a limit counts (rates, statistics, preprocessing): left out of "what differs"
_NOT_SIZE = frozenset({"dropout", "drop_path_rate", "bn_eps", "bn_momentum", "crop_pct", "round_limit", "mean", "std",
                       "anchor_scale", "decoder_dropout", "tf_padding_size"})
# each config type's published configs, by name
_PUBLISHED = {ModelConfig: classifier_config, DetectorConfig: detector_config, SegmenterConfig: segmenter_config}


def label(config) -> str:
    """The config's name, and, when the name is a published model's, the numbers it changed from it (the largest
    changes first): "efficientnet_b0 (width_mult 1e+09)"."""
    try:
        published = _PUBLISHED[type(config)](config.name)
    except (UnknownModelError, UsageError, KeyError, TypeError, AttributeError, ValueError):
        return str(getattr(config, "name", type(config).__name__))
    ours, theirs = _numbers(config), _numbers(published)
    changed = [(path, value) for path, value in ours.items() if theirs.get(path) != value]
    changed.sort(key=lambda item: -_change(item[1], theirs.get(item[0])))
    shown = ", ".join(f"{path} {_shown(value)}" for path, value in changed[:2])
    return f"{config.name} ({shown})" if shown else str(config.name)


def _numbers(thing: Any, prefix: str = "") -> dict[str, Any]:
    """Every number of a config by its path ("backbone.width_mult", "blocks[3].repeats"), tuples of numbers whole."""
    out: dict[str, Any] = {}
    if not dataclasses.is_dataclass(thing):
        return out
    for f in dataclasses.fields(thing):
        value, path = getattr(thing, f.name), f"{prefix}{f.name}"
        if f.name in _NOT_SIZE:
            continue
        if dataclasses.is_dataclass(value):
            out.update(_numbers(value, path + "."))
        elif isinstance(value, tuple) and value and all(dataclasses.is_dataclass(v) for v in value):
            for i, v in enumerate(value):
                out.update(_numbers(v, f"{path}[{i}]."))
        elif is_number(value) or (isinstance(value, tuple) and value and all(is_number(v) for v in value)):
            out[path] = value
    return out


def _change(new: Any, old: Any) -> float:
    """How far ``new`` is from ``old``: the largest factor between their entries (a new field: infinitely far)."""
    if old is None:
        return math.inf
    pairs = zip(new, old) if isinstance(new, tuple) and isinstance(old, tuple) else [(new, old)]
    return max((_factor(a, b) for a, b in pairs), default=math.inf)


def _factor(a: Any, b: Any) -> float:
    """The factor between two numbers, in orders of magnitude (any size of integer; not a number: infinite)."""
    if not (finite(a) and finite(b)):
        return math.inf
    return abs(math.log10(max(abs(a), 1e-300)) - math.log10(max(abs(b), 1e-300)))


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_shown(v) for v in value) + ")"
    return number(value)
