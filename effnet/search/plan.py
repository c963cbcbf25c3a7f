"""The search's plan: the shape of successive halving (Jamieson & Talwalkar 2016; asynchronous as ASHA, Li et al.
2020) and of the seed repeats. Every candidate trains ``min_epochs``, the best 1/``reduction_factor`` of each rung
go on, up to ``max_epochs`` (with ``unit_steps``: units of that many optimizer steps instead of epochs); the
``top`` finalists and the paper's coefficients are then re-trained at ``max_epochs`` with ``repeats`` more seeds.
A study keeps its plan; the runner (``runner/planning.py``) makes it, the report and the plots read it."""

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
    # rungs in optimizer steps (--min-steps): one unit of the levels above is this many steps, not an epoch, so that
    # successive halving has rungs to halve at when a budget pays for about one epoch per candidate
    unit_steps: int | None = None

    def rungs(self) -> list[int]:
        """Epochs at which the pruner decides (the last epoch is not a rung: the run is over there)."""
        out, r = [], self.min_epochs
        while r < self.max_epochs:
            out.append(r)
            r *= self.reduction_factor
        return out

    def levels(self) -> list[int]:
        return [*self.rungs(), self.max_epochs]

    def unit(self) -> str:
        return "steps" if self.unit_steps else "epoch(s)"

    def fidelity(self, level: int) -> int:
        """A level in the plan's unit as the report says it: epochs, or optimizer steps."""
        return level * self.unit_steps if self.unit_steps else level

    def describe(self) -> str:
        """``epochs 1 -> 3 -> 9`` or ``steps 10 -> 30 -> 90``."""
        return f"{'steps' if self.unit_steps else 'epochs'} {' -> '.join(str(self.fidelity(v)) for v in self.levels())}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
