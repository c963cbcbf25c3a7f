"""Everything ``effnet search`` is told, as one frozen dataclass; the part a study must keep is its key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import dataset_hints
from .grid import Candidate, enumerate_grid, parse_range


@dataclass(frozen=True)
class SearchSettings:
    data_dir: str
    base: str = "b0"
    alpha: str = "1.0:1.4:0.05"
    beta: str = "1.0:1.4:0.05"
    gamma: str = "1.0:1.4:0.05"
    flops_ratio: float = 2.0
    tolerance: float = 0.05
    budget_epochs: float = 1.0
    budget_minutes: float | None = None
    base_resolution: int | None = None
    storage: str = "sqlite:///search.db"
    study: str | None = None
    n_jobs: int = 1
    objective: str = "flops"  # or "latency"
    latency_budget: float | None = None  # ms, with objective latency
    out: str | None = None
    seed: int = 0
    batch_size: int = 32
    recipe: str = "finetune"  # AdamW + cosine learns in a short budget; "paper" needs hundreds of epochs
    precise_bn: int = 20  # recompute BN statistics before evaluating a short-budget candidate
    heartbeat: float = 5.0  # seconds; a trial silent for `grace` is taken as dead and redone
    grace: float = 20.0
    threads: int | None = None

    def study_name(self) -> str:
        if self.study:
            return self.study
        return f"effnet-search-{Path(self.data_dir).name}-{Path(self.base).stem}-{self.objective}"

    def out_dir(self) -> Path:
        return Path(self.out or f"search-{self.study_name()}")


def settings_key(s: SearchSettings) -> dict:
    """The settings a study must keep: re-running with other ones would mix incomparable trials."""
    keep = ("base", "alpha", "beta", "gamma", "flops_ratio", "tolerance", "budget_epochs", "budget_minutes",
            "base_resolution", "objective", "latency_budget", "seed", "batch_size", "recipe", "precise_bn")
    return {k: getattr(s, k) for k in keep}


def grid_for(s: SearchSettings) -> tuple[list[Candidate], list[Candidate]]:
    ratio = s.flops_ratio if s.objective == "flops" else None
    return enumerate_grid(parse_range(s.alpha), parse_range(s.beta), parse_range(s.gamma), ratio, s.tolerance)


def base_resolution_for(s: SearchSettings) -> int | None:
    if s.base_resolution:
        return s.base_resolution

    return dataset_hints(s.data_dir).get("resolution")
