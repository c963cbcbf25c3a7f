"""What a search runs, read from its study alone (so that every worker, on any machine, and a rerun after a
kill, agree): the jobs, which are finished, and which one to start next.

A job is (phase, candidate, seed). Phase "rungs": the candidate's successive-halving run with the search seed,
stopped by the pruner at a rung or reaching the final fidelity. Phase "repeat": a finalist re-trained at the
final fidelity with another seed. The finalists are the paper's coefficients (their repeats can start at once)
and the ``top`` best candidates that reached the final fidelity (known when every rung run has finished).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .budget import Plan
from .settings import PAPER, SearchSettings

PHASES = ("rungs", "repeat")
MAX_FAILURES = 3  # a job that failed (or whose worker died) this often is given up and reported


@dataclass(frozen=True)
class Job:
    phase: str
    candidate: str
    seed: int

    def params(self) -> dict:
        return dict(phase=self.phase, candidate=self.candidate, seed=self.seed)

    @staticmethod
    def of(trial) -> "Job | None":
        """The job of a trial; None while its parameters are still being written (or for a foreign trial)."""
        p = trial.params
        if not {"phase", "candidate", "seed"} <= p.keys():
            return None
        return Job(p["phase"], p["candidate"], int(p["seed"]))


def distributions(keys: list[str]) -> dict:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    return {"phase": CategoricalDistribution(PHASES), "candidate": CategoricalDistribution(keys),
            "seed": IntDistribution(0, 2**31 - 1)}


@dataclass
class Progress:
    finished: dict[Job, object] = field(default_factory=dict)  # COMPLETE or PRUNED (by the pruner or a budget)
    running: set[Job] = field(default_factory=set)
    failures: dict[Job, int] = field(default_factory=dict)

    def given_up(self, job: Job) -> bool:
        return job not in self.finished and self.failures.get(job, 0) >= MAX_FAILURES

    def settled(self, job: Job) -> bool:
        return job in self.finished or self.given_up(job)


def read_progress(trials) -> Progress:
    from optuna.trial import TrialState

    prog = Progress()
    for t in trials:
        job = Job.of(t)
        if job is None or t.user_attrs.get("duplicate"):
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            prog.finished.setdefault(job, t)
        elif t.state == TrialState.RUNNING:
            prog.running.add(job)
        elif t.state == TrialState.FAIL:
            prog.failures[job] = prog.failures.get(job, 0) + 1
    return prog


def finalists(s: SearchSettings, plan: Plan, prog: Progress, grid: list[str], same: dict[str, str]) -> list[str]:
    """The ``top`` distinct models that completed their rung run at the final fidelity, best first (fewer MACs
    first among equals), leaving out the paper's model: it is the reference, re-trained anyway."""
    from optuna.trial import TrialState

    done = [prog.finished[j] for k in grid if (j := Job("rungs", k, s.seed)) in prog.finished]
    done = [t for t in done if t.state == TrialState.COMPLETE and "same_model_as" not in t.user_attrs
            and same[t.params["candidate"]] != same[PAPER.key]]
    done.sort(key=lambda t: (-t.value, t.user_attrs.get("macs", 0), t.params["candidate"]))
    return [t.params["candidate"] for t in done[:plan.top]]


def repeat_seeds(s: SearchSettings, plan: Plan) -> list[int]:
    return [s.seed + i for i in range(1, plan.repeats + 1)]


def paper_repeats(s: SearchSettings, plan: Plan, prog: Progress, grid: list[str]) -> list[Job] | None:
    """The paper's re-runs; its own seed too unless its rung run completed at the final fidelity. None while
    that is not known yet."""
    from optuna.trial import TrialState

    jobs = [Job("repeat", PAPER.key, seed) for seed in repeat_seeds(s, plan)]
    own = Job("rungs", PAPER.key, s.seed)
    if PAPER.key in grid:
        if not prog.settled(own):
            return None
        if own in prog.finished and prog.finished[own].state == TrialState.COMPLETE:
            return jobs
    return [Job("repeat", PAPER.key, s.seed), *jobs]


def next_jobs(s: SearchSettings, plan: Plan, prog: Progress, grid: list[str],
              same: dict[str, str]) -> tuple[list[Job], bool]:
    """(jobs to start now, in order; whether anything is left at all). A candidate whose model is the same as
    another's waits for that one's run and copies it; the finalists' repeats wait for every rung run."""

    def settled(job: Job) -> bool:  # a copy of a model that was given up is given up too
        twin = Job("rungs", same[job.candidate], job.seed) if job.phase == "rungs" else job
        return prog.settled(job) or prog.given_up(twin)

    rungs = [Job("rungs", k, s.seed) for k in grid]
    todo = [j for j in rungs if same[j.candidate] == j.candidate or settled(Job("rungs", same[j.candidate], s.seed))]
    paper = paper_repeats(s, plan, prog, grid)
    todo += paper or []
    all_settled = all(settled(j) for j in rungs)
    if all_settled:
        todo += [Job("repeat", k, seed) for k in finalists(s, plan, prog, grid, same) for seed in repeat_seeds(s, plan)]
    todo = [j for j in todo if not settled(j)]
    left = not all_settled or paper is None or bool(todo)
    return [j for j in todo if j not in prog.running], left
