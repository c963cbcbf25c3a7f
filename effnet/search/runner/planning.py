"""The plan of a study, made once and kept in the study (a rerun after a kill, and every worker, follow the
same plan): from ``--budget-epochs``, or measured on this machine to fit ``--budget-minutes``.

The plan is made (and checked) before the study is written to: a plan of one fidelity level has no rung to
compare with the final fidelity, so the verdict could only keep the paper's coefficients whatever the search
found. Such a plan is refused before anything is trained or written, naming the budget that would plan two
levels (from the same timed steps and the same planner), unless ``--one-level`` asks for it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ...data import load_splits, train_transform
from ...errors import UsageError, redact
from ..grid import Candidate, candidate_config, measure_latency_ms, resolve_base, same_models, size_of
from ..plan import Plan
from ..settings import DEFAULT_MAX_EPOCHS, PAPER, SearchSettings, base_resolution_for, candidate_keys, grid_for
from .budget import Costs, Workload, choose_plan, epoch_costs, two_levels_seconds
from .clock import REPORT_PER_STARTUP, REPORT_S
from .trial import reuse_decoded_images

START_UP_S = 15.0  # worker processes importing torch and reading the data, and the final report
TIMING_MARGIN = 1.2  # the budget a refusal names: the planner's smallest, plus room for the next run's timing


def _seconds_per_image(s: SearchSettings, samples, config) -> float:
    """Decoding (cached) + augmenting one training image: the data part of an epoch."""
    from ...data.folders import decoded_image

    tf = train_transform(config, config.resolution, "none", 0.35, 0.0)
    images = [decoded_image(p) for p, _ in samples[:64]]
    t0 = time.perf_counter()
    for image in images:
        tf(image)
    return (time.perf_counter() - t0) / max(1, len(images)) * 1.5  # + collation, the sampler, the RNG fork


def measured_plan(s: SearchSettings, base_plan: Plan, threads: int, budget_s: float,
                  log) -> tuple[Plan, dict, float]:
    """Time a few candidates' training steps here (with the threads each worker will use) and choose the
    longest final fidelity, then the most seeds, that fit ``budget_s``. Also returns the predicted costs
    (seconds per epoch and per evaluation of every distinct model, and per run besides them) that the
    workers' clock starts from and corrects with the measured trials, and the seconds that a plan of two
    levels would need (:func:`two_levels_seconds`, from the same costs)."""
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reuse_decoded_images()
        train, val, classes, _ = load_splits(s.data_dir, 0.1, s.seed, lambda *a: None)
        base = resolve_base(s.base, base_resolution_for(s))
        keys = candidate_keys(s)
        same = same_models(base, keys)
        grid = [c.key for c in grid_for(s)[0]]
        distinct = [k for k in dict.fromkeys([*(same[k] for k in grid), same[PAPER.key]])]
        configs = [candidate_config(base, Candidate.from_key(k)) for k in distinct]
        macs = [size_of(c) for c in configs]  # (a proxy: exact MACs would build all of them)
        per_image = _seconds_per_image(s, train, configs[0])
        # a unit of the plan: an epoch, or (--min-steps) that many optimizer steps
        n_train = s.min_steps * s.batch_size if s.min_steps else len(train)
        work = Workload(s.batch_size, len(classes), n_train, len(val), s.precise_bn, per_image)
        epoch_s, eval_s = epoch_costs(configs, macs, work)
        t0 = time.perf_counter()
        measure_latency_ms(configs[len(configs) // 2])
        # + profiling and building the model, the loaders, saving the weights, the study's bookkeeping
        overhead = 2 * (time.perf_counter() - t0) + 1.0
    finally:
        torch.set_num_threads(saved_threads)
    grid_models = [i for i, k in enumerate(distinct) if any(same[g] == k for g in grid)]
    p = distinct.index(same[PAPER.key])
    predicted = Costs([epoch_s[i] for i in grid_models], [eval_s[i] for i in grid_models], (epoch_s[p], eval_s[p]),
                      overhead, s.n_jobs)
    plan = choose_plan(base_plan, budget_s, predicted)
    plan = Plan(**{**plan.to_dict(), "budget_minutes": s.budget_minutes})
    mean = sum(epoch_s) / len(epoch_s)
    unit = f"unit of {s.min_steps} steps" if s.min_steps else "epoch"
    log(f"measured: {len(grid_models)} distinct models, {mean:.1f} s per {unit} on average "
        f"({min(epoch_s):.1f}-{max(epoch_s):.1f} s, {threads} thread(s) per worker, {s.n_jobs} worker(s))")
    costs = dict(epoch_s=dict(zip(distinct, epoch_s)), eval_s=dict(zip(distinct, eval_s)),
                 overhead_s=overhead + sum(eval_s) / len(eval_s))
    return plan, costs, two_levels_seconds(base_plan, predicted)


@dataclass(frozen=True)
class Planned:
    """A search's plan before the study keeps it. ``costs``: the predicted costs the clock starts from (with
    ``--budget-minutes``); ``two_levels_minutes``: the smallest ``--budget-minutes`` whose plan has two levels
    (with ``--budget-minutes``, when the plan was made here); ``saved``: the study's own plan, made by an earlier
    (or another) process."""

    plan: Plan
    costs: dict | None = None
    two_levels_minutes: float | None = None
    saved: bool = False


def make_plan(s: SearchSettings, saved: dict | None, threads: int, log) -> Planned:
    """The study's plan when it has one (``saved``), else a new one: from ``--budget-epochs``, or, with
    ``--budget-minutes``, from training steps timed here (a few seconds: reading the data set's file list, decoding
    64 images, three training steps of three candidates). Writes nothing: the study is not opened."""
    if saved is not None:
        return Planned(Plan(**saved), saved=True)
    base_plan = Plan(max_epochs=s.max_epochs(), min_epochs=1 if s.min_steps else s.min_epochs,
                     reduction_factor=s.reduction_factor, repeats=s.repeats, top=s.top, unit_steps=s.min_steps)
    if not s.budget_minutes:
        return Planned(base_plan)
    now = time.time()
    deadline = s.deadline or now + s.budget_minutes * 60
    spent = now - (deadline - s.budget_minutes * 60)  # the interpreter's start and the imports count
    report_s = max(REPORT_S, REPORT_PER_STARTUP * spent)
    reserve = spent + max(START_UP_S, report_s)  # what a budget pays besides the plan: before it, and the report
    plan, costs, two_levels_s = measured_plan(s, base_plan, threads, s.budget_minutes * 60 - reserve, log)
    costs["report_s"] = report_s
    return Planned(plan, costs, (two_levels_s + reserve) / 60)


def _asked(s: SearchSettings) -> str:
    """The flags that set the plan's levels, as the user gave them."""
    if s.budget_minutes:
        return f"--budget-minutes {s.budget_minutes:g}"
    final = (f"--budget-epochs {s.budget_epochs:g}" if s.budget_epochs is not None else
             f"the default --budget-epochs {DEFAULT_MAX_EPOCHS}")
    return final if s.min_epochs == 1 else f"--min-epochs {s.min_epochs} with {final}"


def _two_levels(s: SearchSettings, planned: Planned) -> str | None:
    """The budget flag that plans two levels: epochs count directly; minutes come from the timed steps, with
    TIMING_MARGIN for the next run's timing (probes varied by ~10% on a shared machine: the bare smallest budget
    was refused again on a rerun), rounded up to a whole minute. None for a plan made by an earlier process
    (nothing was timed here)."""
    if s.budget_minutes:
        if planned.two_levels_minutes is None:
            return None
        return f"--budget-minutes {max(1, math.ceil(planned.two_levels_minutes * TIMING_MARGIN))}"
    return f"--budget-epochs {planned.plan.min_epochs + 1}"


def check_levels(s: SearchSettings, planned: Planned) -> None:
    """Refuse a plan of one fidelity level (UsageError: one line, before anything is trained or written) unless
    ``s.one_level``: the verdict names a winner only when the rungs' ranking holds at the next level (Spearman's
    rho, ``verdict.py``), so with one level it can only keep the paper's coefficients."""
    plan = planned.plan
    if len(plan.levels()) >= 2 or s.one_level:
        return
    why = (f"plans one fidelity level ({plan.describe()}): the verdict needs two to compare and could only keep "
           "the paper's coefficients")
    if planned.saved:
        raise UsageError(f"study {s.study_name()!r} in {redact(s.storage)} {why}; give --one-level to go on with "
                         "it, or another --study with a larger budget")
    need = "; give "
    if planned.two_levels_minutes is not None:  # (rounded up, as the budget it names)
        need = f"; two levels need about {math.ceil(planned.two_levels_minutes * 10) / 10:g} min on this machine: give "
    raise UsageError(f"{_asked(s)} {why}{need}{_two_levels(s, planned)} or more, or --one-level to search anyway")


def keep_plan(s: SearchSettings, study, planned: Planned, log) -> Plan:
    """Store the plan (and with a time budget, the predicted costs) in the study unless it has one (two first
    processes: the later write wins, both read it back), and say what it is: its levels and rungs, the finalists'
    seeds, and how much of the budget it is predicted to take."""
    if study.user_attrs.get("plan") is None:
        if planned.costs is not None:
            study.set_user_attr("costs", planned.costs)
        study.set_user_attr("plan", planned.plan.to_dict())
        time.sleep(0.5)
    saved = study.user_attrs["plan"]  # (read from the storage at each access)
    plan = Plan(**saved)
    if saved != planned.plan.to_dict():  # another process planned first: its plan is the study's
        planned = Planned(plan, saved=True)
        check_levels(s, planned)
    n = len(plan.levels())
    if n >= 2:
        levels = (f"{n} fidelity levels to compare; the best 1/{plan.reduction_factor} of each rung go on")
    else:
        more = _two_levels(s, planned)
        levels = ("one fidelity level, as --one-level allows: no rung to compare, so the verdict will keep the paper's "
                  "coefficients" + (f"; {more} or more would plan two" if more else ""))
    fit = (f"; about {plan.estimate_minutes:g} min of the {plan.budget_minutes:g} min budget"
           if plan.budget_minutes else "")
    log(f"plan: {plan.describe()} ({levels}); the top {plan.top} and the paper's coefficients re-trained at "
        f"{plan.fidelity(plan.max_epochs)} {plan.unit()} with {plan.repeats} more seed(s){fit}")
    if plan.budget_minutes and plan.estimate_minutes and plan.estimate_minutes > plan.budget_minutes:
        first = f"{plan.unit_steps} steps" if plan.unit_steps else "one epoch"
        log(f"note: {first} for every candidate needs about {plan.estimate_minutes:g} min; the candidates that "
            f"do not fit the budget (after the seed repeats) will be cut for time and listed in the report")
    if plan.budget_minutes:
        log("the clock re-estimates every job's cost from the finished trials and starts only what ends in time")
    return plan
