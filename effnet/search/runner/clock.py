"""The wall-clock budget of a whole search (``--budget-minutes``), measured as it goes.

The plan (``planning.py``) is a first guess from timed training steps. What keeps the search inside its
budget is this clock: the deadline is counted from the start of the ``effnet search`` process, every job's
cost is predicted from the timed steps scaled by what the finished trials really took (re-estimated after
every trial, so machine load and start-up are paid for), and a job starts only if it can end in time:

- a candidate's first rung starts only if it ends before the *rung deadline*: the deadline less the
  finalists' seed repeats still to run (spread over the workers) and the final report;
- a run the pruner promotes goes on to the next rung only if that too ends before the rung deadline;
- a seed repeat starts only if it ends before the deadline less the report.

The first candidate that no longer fits closes the rung phase for this process: the candidates not started
are "cut for time" (listed in the report; a rerun trains them), the finalists are chosen from the runs that
finished, and their repeats use the reserved time. A run that still overruns (a sudden load) is stopped at
the deadline mid-epoch by the training loop and counted as cut at its last whole epoch.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field

from ..settings import SearchSettings

# after the last job: reading the study, the report and its plots, the process's exit (11 s in a 10-minute search
# at load 4; 33 s at load 10, 2.6x that process's 12.6 s start-up, two thirds of it the interpreter's exit). At
# least this, or twice what this process's start-up took (imports and files: slow on a loaded machine, like the
# report), scaled by the slowdown measured since (``Clock.factor``): a fixed 8 s let a search under load 9 end
# 2 minutes late (benchmarks/results/search_verdict_quick_10min_steps4.json)
REPORT_S = 12.0
REPORT_PER_STARTUP = 2.0
RESERVE_SHARE = 0.35  # of a budget kept for the finalists' seed repeats beyond the two runs a verdict needs
# the most of a budget the report's reserve grows to with ``Clock.factor`` (never below the planned reserve). The
# factor is training's measured / predicted time, which is also how far the timed steps miss a small model's
# epochs: a search of tiny models under a 36 s budget measured 3.35x on its first trial (0.64 s for an epoch
# predicted at 0.19 s), reserved over 3.35 x 12 s for a report written in half a second, and cut every job 3 s after
# its start. The trade: a budget of a minute or two on a badly loaded machine may end a few seconds late (load 10:
# a 33 s report against a reserve of twice the 12.6 s start-up) where it used to reserve everything and train nothing
REPORT_SHARE = 1 / 3


def process_started() -> float:
    """Unix time at which this process started (the interpreter and the imports count against a budget)."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - max(0.0, min(age, 3600.0))
    except (OSError, ValueError, IndexError):
        return time.time()


@dataclass
class Clock:
    """A process's deadline and cost model. ``deadline`` None: no time budget (every job fits)."""

    deadline: float | None = None
    start: float = 0.0  # when the budget began (the deadline less the budget)
    workers: int = 1
    epoch_s: dict[str, float] = field(default_factory=dict)  # predicted seconds per training epoch, per model
    eval_s: dict[str, float] = field(default_factory=dict)  # predicted seconds per evaluation (+ precise BN)
    overhead_s: float = 2.0  # per run besides its epochs: measuring the model, building it, evaluating, saving
    factor: float = 1.0  # measured / predicted epoch time over the finished trials
    measured: int = 0  # trials the estimate is calibrated on
    report_s: float = REPORT_S  # seconds kept after the last job at the planned speed (the plan's ``costs``)

    @classmethod
    def from_study(cls, study, s: SearchSettings) -> "Clock":
        """The clock of search ``s`` (its deadline, its workers) from the costs its study's plan predicted."""
        costs = study.user_attrs.get("costs") or {}
        start = s.deadline - 60 * s.budget_minutes if s.deadline is not None and s.budget_minutes else 0.0
        return cls(s.deadline, start, max(1, s.n_jobs), dict(costs.get("epoch_s", {})), dict(costs.get("eval_s", {})),
                   float(costs.get("overhead_s", 2.0)), report_s=float(costs.get("report_s", REPORT_S)))

    def calibrate(self, trials, same: dict[str, str]) -> None:
        """Scale the predictions by what the finished, trained (not copied) runs really cost."""
        ratios, overheads = [], []
        for t in trials:
            a = t.user_attrs
            # finished only: a worker sets a trial's attributes one at a time (a copy's in the storage's order),
            # and another worker may read it in between -- train_seconds there, wall_seconds not yet
            if not t.state.is_finished() or "train_seconds" not in a or "same_model_as" in a \
                    or not a.get("epochs_trained"):
                continue
            predicted = self.epoch_s.get(same.get(t.params.get("candidate"), ""))
            if predicted:
                ratios.append(a["train_seconds"] / (a["epochs_trained"] * predicted))
            span = a["wall_seconds"]
            if t.datetime_start is not None and t.datetime_complete is not None:  # + claiming and recording it
                span = max(span, (t.datetime_complete - t.datetime_start).total_seconds())
            overheads.append(span - a["train_seconds"])
        if ratios:
            self.factor = min(10.0, max(0.2, statistics.median(ratios)))
        if overheads:  # (+ the worker's loop between two trials: reading the study, failing stale trials)
            self.overhead_s = max(0.0, statistics.median(overheads)) * 1.1 + 0.2
        self.measured = len(overheads)

    def seconds(self, model: str, epochs: float, evaluations: int = 1) -> float:
        """Predicted wall seconds of a run of ``model`` for ``epochs`` (the overhead includes one evaluation)."""
        mean = statistics.fmean(self.epoch_s.values()) if self.epoch_s else 0.0
        epoch = self.epoch_s.get(model, mean)
        evaluation = self.eval_s.get(model, statistics.fmean(self.eval_s.values()) if self.eval_s else 0.0)
        return self.factor * (epochs * epoch + max(0, evaluations - 1) * evaluation) + self.overhead_s

    def evaluation(self, model: str) -> float:
        """Predicted seconds of one evaluation of ``model`` (precise BN and the validation set)."""
        mean = statistics.fmean(self.eval_s.values()) if self.eval_s else 0.0
        return self.factor * self.eval_s.get(model, mean)

    def more(self, model: str, epochs: float) -> float:
        """Predicted seconds for a running run of ``model`` to train ``epochs`` more and evaluate once."""
        return self.seconds(model, epochs, 2) - self.overhead_s

    def end(self) -> float:
        """When the last job must be over: the deadline less the report (slower on a loaded machine: a fixed
        reserve let a search under load end tens of seconds past its budget), up to REPORT_SHARE of the budget."""
        if self.deadline is None:
            return math.inf
        cap = max(self.report_s, REPORT_SHARE * (self.deadline - self.start))
        return self.deadline - min(self.report_s * max(1.0, self.factor), cap)

    def makespan(self, models: list[str], epochs: int) -> float:
        """Wall seconds of runs of ``models`` for ``epochs`` each, packed onto the workers longest first."""
        loads = [0.0] * self.workers
        for cost in sorted((self.seconds(m, epochs) for m in models), reverse=True):
            loads[loads.index(min(loads))] += cost
        return max(loads)

    def rung_end(self, repeats: tuple[list[str], list[str]], max_epochs: int) -> float:
        """When the rung runs must be over: the end less the seed repeats still to run at ``max_epochs``.
        ``repeats`` = (the ones a verdict needs: the paper's coefficients' and one seed more for the best
        finalist; the other finalists' seeds, most useful first). The first are always reserved, the others
        while the reservation stays within RESERVE_SHARE of the budget (the rest run if time is left)."""
        if self.deadline is None:
            return math.inf
        must, more = repeats
        reserved = list(must)
        for m in more:
            if self.makespan([*reserved, m], max_epochs) > RESERVE_SHARE * (self.end() - self.start):
                break
            reserved.append(m)
        return self.end() - self.makespan(reserved, max_epochs)

    def fits(self, seconds: float, end: float) -> bool:
        return time.time() + seconds <= end

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.time()
