"""The search's plan: the shape of successive halving (Jamieson & Talwalkar 2016; asynchronous as ASHA, Li et al.
2020) and of the seed repeats. Every candidate trains ``min_epochs``, the best 1/``reduction_factor`` of each rung
go on, up to ``max_epochs``; the ``top`` finalists and the paper's coefficients are then re-trained at
``max_epochs`` with ``repeats`` more seeds. A study keeps its plan; the runner (``runner/planning.py``) makes it,
the report and the plots read it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    max_epochs: int  # the fidelity of the finalists
    min_epochs: int = 1  # first rung: every candidate trains this long
    reduction_factor: int = 3  # eta: the best 1/eta of a rung goes on
    repeats: int = 2  # extra seeds per finalist at max_epochs
    top: int = 3  # finalists besides the paper's coefficients
    estimate_minutes: float | None = None  # predicted wall time (with --budget-minutes)
    budget_minutes: float | None = None

    def rungs(self) -> list[int]:
        """Epochs at which the pruner decides (the last epoch is not a rung: the run is over there)."""
        out, r = [], self.min_epochs
        while r < self.max_epochs:
            out.append(r)
            r *= self.reduction_factor
        return out

    def levels(self) -> list[int]:
        return [*self.rungs(), self.max_epochs]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
