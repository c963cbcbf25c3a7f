"""The grid of step 1: alpha/beta/gamma candidates, the FLOPs constraint, and each candidate's phi=1 model."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
import warnings
from dataclasses import dataclass

import torch

from ..errors import UsageError
from ..models.paper.accounting import profile
from ..models.nets.config import ModelConfig, compound, scale
from ..models.nets.efficientnet import EfficientNet
from ..models.zoo.registry import resolve_config


def parse_range(text: str) -> list[float]:
    """``"1.0:1.4:0.05"`` -> [1.0, 1.05, ..., 1.4]; ``"1.2"`` -> [1.2]; ``"1.1,1.2"`` -> [1.1, 1.2]."""
    try:
        if "," in text:
            return [float(v) for v in text.split(",")]
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        raise UsageError(f"bad range {text!r}: expected START:STOP:STEP, a list a,b,c, or one value") from None
    if len(parts) == 1:
        return parts
    if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
        raise UsageError(f"bad range {text!r}: expected START:STOP:STEP with STEP > 0 and STOP >= START")
    start, stop, step = parts
    n = int(math.floor((stop - start) / step + 1e-9))
    return [round(start + i * step, 6) for i in range(n + 1)]


@dataclass(frozen=True, order=True)
class Candidate:
    alpha: float
    beta: float
    gamma: float

    @property
    def ratio(self) -> float:
        """FLOPs growth per unit of phi predicted by the rule: alpha * beta^2 * gamma^2."""
        return self.alpha * self.beta**2 * self.gamma**2

    @property
    def key(self) -> str:
        return f"{self.alpha:g},{self.beta:g},{self.gamma:g}"

    @staticmethod
    def from_key(key: str) -> "Candidate":
        a, b, g = (float(v) for v in key.split(","))
        return Candidate(a, b, g)


def enumerate_grid(alphas, betas, gammas, flops_ratio: float | None = 2.0, tolerance: float = 0.1):
    """(kept, dropped): with a ratio, keep alpha*beta^2*gamma^2 within ``tolerance`` (relative) of it."""
    kept, dropped = [], []
    for a, b, g in itertools.product(alphas, betas, gammas):
        c = Candidate(a, b, g)
        if flops_ratio is None or abs(c.ratio - flops_ratio) <= tolerance * flops_ratio:
            kept.append(c)
        else:
            dropped.append(c)
    return kept, dropped


def resolve_base(base: str, base_resolution: int | None) -> ModelConfig:
    cfg = resolve_config(base)
    return cfg.replace(resolution=base_resolution) if base_resolution else cfg


def candidate_config(base: ModelConfig, c: Candidate, phi: float = 1.0) -> ModelConfig:
    """The phi-scaled model of a candidate. Resolution rounds to whole pixels (a search runs at small sizes,
    where rounding to multiples of 8 would erase gamma)."""
    with warnings.catch_warnings():  # the grid decides which ratios are acceptable, not compound()
        warnings.simplefilter("ignore", UserWarning)
        return compound(phi, c.alpha, c.beta, c.gamma, base=base, resolution_divisor=1)


def architecture_key(config: ModelConfig) -> str:
    """Identity of the network a config builds: rounded stages, stem/head widths and input resolution."""

    arch = scale(config)
    return json.dumps([arch.stem_channels, arch.head_channels, config.resolution, config.dropout,
                       [dataclasses.astuple(st) for st in arch.stages]])


def same_models(base: ModelConfig, keys: list[str]) -> dict[str, str]:
    """Candidates whose rounded architecture and resolution coincide (e.g. alpha 1.05 and 1.1 both round the
    B0 repeats up to the same depth) are one model: map each to the first key of its model."""
    arch = {k: architecture_key(candidate_config(base, Candidate.from_key(k))) for k in keys}
    return {k: next(r for r in keys if arch[r] == arch[k]) for k in keys}


def measure_latency_ms(config: ModelConfig, repeats: int = 15) -> float:
    """Median batch-1 CPU latency (ms) of the model at its resolution, in eval mode."""

    model = EfficientNet(config).eval()
    x = torch.randn(1, config.in_chans, config.resolution, config.resolution)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    times.sort()
    return 1000.0 * times[len(times) // 2]


def profile_of(cfg: ModelConfig):
    """:func:`profile` of the model built on the meta device: exact MACs and params from shapes alone, without
    allocating or initialising weights (a few times faster: the search profiles every candidate)."""
    with torch.device("meta"):
        return profile(EfficientNet(cfg))


def macs_of(cfg: ModelConfig) -> int:
    return profile_of(cfg).macs


def params_of(cfg: ModelConfig) -> int:
    return profile_of(cfg).params


def size_of(cfg: ModelConfig) -> float:
    """The compound-scaling rule's FLOPs proxy of a scaled config, d * w^2 * r^2 (rounded resolution): instant,
    for ordering and interpolating measured costs, where exact MACs would mean building every model."""
    return cfg.depth_mult * cfg.width_mult**2 * cfg.resolution**2
