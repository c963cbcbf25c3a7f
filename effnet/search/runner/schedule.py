"""What a search runs, read from its study alone (so that every worker, on any machine, and a rerun after a
kill, agree): the jobs, which are finished, and which one to start next.

A job is (phase, candidate, seed). Phase "rungs": the candidate's successive-halving run with the search seed,
stopped by the pruner at a rung or reaching the final fidelity. Phase "repeat": a finalist re-trained at the
final fidelity with another seed. The finalists are the paper's coefficients (their repeats can start at once)
and the ``top`` best candidates that reached the final fidelity (known when every rung run has finished).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..settings import PAPER
from .context import SearchContext

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


def stale_cut(t, session: float | None) -> bool:
    """A run cut for time by an earlier ``effnet search`` process (an earlier budget): redone, not kept."""
    return t.user_attrs.get("pruned_by") == "time" and t.user_attrs.get("session") != session


def read_progress(trials, session: float | None = None) -> Progress:
    """Finished, running and failed jobs. ``session``: this process's deadline (runs it cut for time are
    finished for it; those cut by an earlier process are to do again)."""
    from optuna.trial import TrialState

    prog = Progress()
    for t in trials:
        job = Job.of(t)
        if job is None or t.user_attrs.get("duplicate") or stale_cut(t, session):
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            prog.finished.setdefault(job, t)
        elif t.state == TrialState.RUNNING:
            prog.running.add(job)
        elif t.state == TrialState.FAIL:
            prog.failures[job] = prog.failures.get(job, 0) + 1
    return prog


def finalists(ctx: SearchContext, prog: Progress) -> list[str]:
    """The ``top`` distinct models that completed their rung run at the final fidelity, best first (fewer MACs
    first among equals), leaving out the paper's model: it is the reference, re-trained anyway."""
    from optuna.trial import TrialState

    same = ctx.same
    done = [prog.finished[j] for k in ctx.grid if (j := Job("rungs", k, ctx.settings.seed)) in prog.finished]
    done = [t for t in done if t.state == TrialState.COMPLETE and "same_model_as" not in t.user_attrs
            and same[t.params["candidate"]] != same[PAPER.key]]
    done.sort(key=lambda t: (-t.value, t.user_attrs.get("macs", 0), t.params["candidate"]))
    return [t.params["candidate"] for t in done[:ctx.plan.top]]


def repeat_seeds(ctx: SearchContext) -> list[int]:
    return [ctx.settings.seed + i for i in range(1, ctx.plan.repeats + 1)]


def visit_order(grid: list[str]) -> list[str]:
    """The order rung runs start in: the paper's coefficients first (the reference), then the rest in a fixed
    random order, the same for every search seed: when the time budget cuts the grid short, the candidates that
    ran are spread over the grid (not all alpha = 1.0), and two searches with other seeds cut the same ones."""
    rest = [k for k in grid if k != PAPER.key]
    random.Random(13).shuffle(rest)
    return [PAPER.key, *rest] if PAPER.key in grid else rest


def paper_repeats(ctx: SearchContext, prog: Progress, cut: frozenset = frozenset()) -> list[Job] | None:
    """The paper's re-runs; its own seed too unless its rung run completed at the final fidelity. None while
    that is not known yet."""
    from optuna.trial import TrialState

    seed = ctx.settings.seed
    jobs = [Job("repeat", PAPER.key, other) for other in repeat_seeds(ctx)]
    own = Job("rungs", PAPER.key, seed)
    if PAPER.key in ctx.grid and own not in cut:
        if not prog.settled(own):
            return None
        if own in prog.finished and prog.finished[own].state == TrialState.COMPLETE:
            return jobs
    return [Job("repeat", PAPER.key, seed), *jobs]


@dataclass
class Next:
    """What a worker may do now: ``todo`` (in order), whether anything is ``left`` (else the worker exits),
    the jobs ``cut`` for time, and ``close``: the rung phase must be closed now (its next run does not fit)."""

    todo: list[Job]
    left: bool
    cut: list[Job]
    close: bool = False


def repeats_left(ctx: SearchContext, prog: Progress, paper: list[Job] | None,
                 n_models: int) -> tuple[list[str], list[str]]:
    """Models of the seed repeats not started yet while the rung runs go on (the finalists are not known
    yet: stand-ins of average cost, ""): (the paper's and the best finalist's next seed, the other finalists'
    seeds, one more seed for each finalist at a time)."""
    seeds = repeat_seeds(ctx)
    jobs = paper if paper is not None else [Job("repeat", PAPER.key, seed) for seed in [ctx.settings.seed, *seeds]]
    must = [ctx.same.get(j.candidate, j.candidate) for j in jobs if not prog.settled(j) and j not in prog.running]
    more = [""] * (min(ctx.plan.top, n_models) * len(seeds))
    return must + more[:1], more[1:]


def next_jobs(ctx: SearchContext, prog: Progress, closed: bool = False) -> Next:
    """A candidate whose model is the same as another's waits for that one's run and copies it; the finalists'
    repeats wait for every rung run. With a time budget (``ctx.clock``) a job is offered only if it can end in
    time (``clock.py``); once the rung phase is ``closed`` the candidates not started are cut for time."""
    s, plan, grid, same, clock = ctx.settings, ctx.plan, ctx.grid, ctx.same, ctx.clock

    def settled(job: Job) -> bool:  # a copy of a model that was given up is given up too
        twin = Job("rungs", same[job.candidate], job.seed) if job.phase == "rungs" else job
        return prog.settled(job) or prog.given_up(twin)

    def twin(j: Job) -> Job:
        return Job("rungs", same[j.candidate], s.seed)

    rungs = [Job("rungs", k, s.seed) for k in visit_order(grid)]
    pending = [j for j in rungs if not settled(j) and j not in prog.running]
    copies = [j for j in pending if twin(j) != j and settled(twin(j))]
    fresh = [j for j in pending if twin(j) == j]
    paper0 = paper_repeats(ctx, prog)
    n_models = len({same[k] for k in grid} - {same[PAPER.key]})
    close = False
    if clock.deadline is not None and not closed and fresh:
        rung_end = clock.rung_end(repeats_left(ctx, prog, paper0, n_models), plan.max_epochs)
        fresh = [j for j in fresh if clock.fits(clock.seconds(j.candidate, plan.min_epochs), rung_end)]
        close = closed = not fresh or fresh[0] != [j for j in pending if twin(j) == j][0]
    cut = [j for j in pending if j not in copies and twin(j) not in prog.running] if closed else []
    if closed:
        fresh = []
    all_settled = all(settled(j) or j in cut for j in rungs)
    cut_keys = frozenset(cut)
    paper = paper_repeats(ctx, prog, cut_keys)
    fins = finalists(ctx, prog) if all_settled else []
    order = {k: i for i, k in enumerate([PAPER.key, *fins])}
    repeats = [j for j in (paper or []) + [Job("repeat", k, seed) for k in fins for seed in repeat_seeds(ctx)]
               if not settled(j)]
    repeats.sort(key=lambda j: (j.seed != s.seed, j.seed, order[j.candidate]))  # seed by seed: two for each first
    if clock.deadline is not None:
        fitting = [j for j in repeats if j in prog.running
                   or clock.fits(clock.seconds(same[j.candidate], plan.max_epochs), clock.end())]
        cut += [j for j in repeats if j not in fitting]
        repeats = fitting
    todo = [j for j in copies + fresh + repeats if j not in prog.running]
    left = bool(todo) or bool(prog.running) or not all_settled or paper is None
    return Next(todo, left, cut, close)
