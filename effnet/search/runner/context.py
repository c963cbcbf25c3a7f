"""The runner's one context object: what every step of a search worker reads, opened once per worker process and
handed to every function of the runner instead of the dozen values they used to thread through."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ...errors import UsageError
from ...models.nets.config import ModelConfig
from ..grid import macs_of, resolve_base, same_models
from ..plan import Plan
from ..settings import SearchSettings, base_resolution_for, candidate_keys, grid_for
from .clock import Clock
from .study import make_pruner, open_study, pick_sampler


@dataclass(frozen=True)
class SearchContext:
    """One worker's view of a search. ``study`` is opened on ``storage``, the ``RDBStorage`` this process built:
    trial ids, heartbeats and failing dead trials go through its public methods. ``clock`` is this process's
    deadline and cost model (re-calibrated in place after every trial)."""

    settings: SearchSettings
    study: Any  # optuna.Study
    storage: Any  # optuna.storages.RDBStorage
    study_id: int
    plan: Plan
    clock: Clock
    grid: list[str]  # the grid's candidate keys (those the FLOPs constraint kept)
    keys: list[str]  # every candidate a trial can be about: the grid and the paper's coefficients
    same: dict[str, str]  # candidate -> the first candidate of the same model (trained once, copied to the rest)
    base: ModelConfig  # the base the candidates scale from
    base_macs: int
    sampler: Any  # the study's sampler: it returns the job a worker claimed
    log: Callable[[str], None] = print

    @classmethod
    def open(cls, s: SearchSettings, log: Callable[[str], None] = print) -> "SearchContext":
        """Open the study, wait for its plan (made by the planning process), and derive the rest from ``s``."""
        study, storage = open_study(s)
        plan = Plan(**wait_for_plan(study))
        sampler = pick_sampler()
        study.sampler, study.pruner = sampler, make_pruner(plan)
        base = resolve_base(s.base, base_resolution_for(s))
        keys = candidate_keys(s)
        study_id = storage.get_study_id_from_name(study.study_name)
        return cls(s, study, storage, study_id, plan, Clock.from_study(study, s), [c.key for c in grid_for(s)[0]],
                   keys, same_models(base, keys), base, macs_of(base), sampler, log)

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` of this study (what heartbeats and state changes are keyed by)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)


def wait_for_plan(study, timeout: float = 1800.0) -> dict:
    """The study's plan; a worker started alongside the planning process waits for it."""
    t0 = time.time()
    while (plan := study.user_attrs.get("plan")) is None:
        if time.time() - t0 > timeout:
            raise UsageError(f"study {study.study_name!r} has no plan after {timeout:.0f} s")
        time.sleep(0.5)
    return plan
