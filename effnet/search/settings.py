"""Everything ``effnet search`` is told, as one frozen dataclass; the part a study must keep is its key."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..data import dataset_hints
from ..models.nets.config import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA
from .grid import Candidate, enumerate_grid, parse_range

# the paper's coefficients (section 3.3; their one home is effnet.models.nets.config): the reference every winner must beat
PAPER = Candidate(PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA)
DEFAULT_MAX_EPOCHS = 9  # without --budget-minutes: rungs at 1 and 3 epochs, finalists at 9


@dataclass(frozen=True)
class SearchSettings:
    data_dir: str
    base: str = "b0"
    alpha: str = "1.0:1.4:0.05"
    beta: str = "1.0:1.4:0.05"
    gamma: str = "1.0:1.4:0.05"
    flops_ratio: float = 2.0
    tolerance: float = 0.05
    budget_epochs: float | None = None  # epochs the finalists reach (default 9); or plan it from budget_minutes
    budget_minutes: float | None = None  # the whole search, rungs and repeats
    # a plan of one fidelity level has no rung to compare, so its verdict can only keep the paper's coefficients:
    # refused before anything is trained or written, unless asked for (``effnet search --one-level``)
    one_level: bool = False
    min_epochs: int = 1  # first rung of successive halving: every candidate trains this long
    min_steps: int | None = None  # rungs in optimizer steps: the first rung (and the plan's unit) is this many steps
    reduction_factor: int = 3  # the best 1/eta of each rung trains eta times longer
    top: int = 3  # finalists re-trained with other seeds, besides the paper's coefficients
    repeats: int = 2  # extra seeds per finalist (with budget_minutes: at least this many, more if time allows)
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
    precise_bn: int = 10  # batches to recompute BN statistics with before every evaluation (320 images at 32)
    heartbeat: float = 5.0  # seconds; a trial silent for `grace` is taken as dead and redone
    grace: float = 20.0
    threads: int | None = None
    deadline: float | None = None  # unix time: budget_minutes counted from this process's start (set by run_search)

    def study_name(self) -> str:
        if self.study:
            return self.study
        return f"effnet-search-{Path(self.data_dir).name}-{Path(self.base).stem}-{self.objective}"

    def out_dir(self) -> Path:
        return Path(self.out or f"search-{self.study_name()}")

    def max_epochs(self) -> int:
        """The finalists' fidelity in the plan's unit (epochs; with ``min_steps``, units of that many steps)."""
        first = 1 if self.min_steps else self.min_epochs
        return max(first, math.ceil(self.budget_epochs or DEFAULT_MAX_EPOCHS))


def settings_key(s: SearchSettings) -> dict:
    """The settings a study must keep: re-running with other ones would mix incomparable trials."""
    keep = ("base", "alpha", "beta", "gamma", "flops_ratio", "tolerance", "budget_epochs", "budget_minutes",
            "min_epochs", "min_steps",
            "reduction_factor", "top", "repeats", "base_resolution", "objective", "latency_budget",
            "seed", "batch_size", "recipe", "precise_bn")
    return {k: getattr(s, k) for k in keep}


def grid_for(s: SearchSettings) -> tuple[list[Candidate], list[Candidate]]:
    ratio = s.flops_ratio if s.objective == "flops" else None
    return enumerate_grid(parse_range(s.alpha), parse_range(s.beta), parse_range(s.gamma), ratio, s.tolerance)


def candidate_keys(s: SearchSettings) -> list[str]:
    """Every candidate a trial can be about: the grid, and the paper's coefficients (always re-trained as the
    reference, in the grid or not)."""
    keys = [c.key for c in grid_for(s)[0]]
    return keys if PAPER.key in keys else [*keys, PAPER.key]


def base_resolution_for(s: SearchSettings) -> int | None:
    if s.base_resolution:
        return s.base_resolution

    return dataset_hints(s.data_dir).get("resolution")
