"""The plan of a study, made once and kept in the study (a rerun after a kill, and every worker, follow the
same plan): from ``--budget-epochs``, or measured on this machine to fit ``--budget-minutes``."""

from __future__ import annotations

import time

import torch

from ...data import load_splits, train_transform
from ..grid import Candidate, candidate_config, measure_latency_ms, resolve_base, same_models, size_of
from ..plan import Plan
from ..settings import PAPER, SearchSettings, base_resolution_for, candidate_keys, grid_for
from .budget import Costs, Workload, choose_plan, epoch_costs
from .clock import REPORT_PER_STARTUP, REPORT_S
from .trial import reuse_decoded_images

START_UP_S = 15.0  # worker processes importing torch and reading the data, and the final report


def _seconds_per_image(s: SearchSettings, samples, config) -> float:
    """Decoding (cached) + augmenting one training image: the data part of an epoch."""
    from ...data.folders import decoded_image

    tf = train_transform(config, config.resolution, "none", 0.35, 0.0)
    images = [decoded_image(p) for p, _ in samples[:64]]
    t0 = time.perf_counter()
    for image in images:
        tf(image)
    return (time.perf_counter() - t0) / max(1, len(images)) * 1.5  # + collation, the sampler, the RNG fork


def measured_plan(s: SearchSettings, base_plan: Plan, threads: int, budget_s: float, log) -> tuple[Plan, dict]:
    """Time a few candidates' training steps here (with the threads each worker will use) and choose the
    longest final fidelity, then the most seeds, that fit ``budget_s``. Also returns the predicted costs
    (seconds per epoch and per evaluation of every distinct model, and per run besides them) that the
    workers' clock starts from and corrects with the measured trials."""
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
    return plan, costs


def load_or_make_plan(s: SearchSettings, study, threads: int, log) -> Plan:
    """The study's plan (and with a time budget, the predicted costs); made (and stored) by the first process
    that finds none."""
    saved = study.user_attrs.get("plan")
    if saved is None:
        base_plan = Plan(max_epochs=s.max_epochs(), min_epochs=1 if s.min_steps else s.min_epochs,
                         reduction_factor=s.reduction_factor, repeats=s.repeats, top=s.top, unit_steps=s.min_steps)
        plan, costs = base_plan, None
        if s.budget_minutes:
            now = time.time()
            deadline = s.deadline or now + s.budget_minutes * 60
            report_s = max(REPORT_S, REPORT_PER_STARTUP * (now - (deadline - s.budget_minutes * 60)))  # start-up
            budget_s = deadline - now - max(START_UP_S, report_s)
            plan, costs = measured_plan(s, base_plan, threads, budget_s, log)
            costs["report_s"] = report_s
        if study.user_attrs.get("plan") is None:  # two first processes: the later write wins, both read it back
            if costs is not None:
                study.set_user_attr("costs", costs)
            study.set_user_attr("plan", plan.to_dict())
            time.sleep(0.5)
        saved = study.user_attrs["plan"]  # (read from the storage at each access)
    plan = Plan(**saved)
    fit = (f"; about {plan.estimate_minutes:g} min of the {plan.budget_minutes:g} min budget"
           if plan.budget_minutes else "")
    log(f"plan: {plan.describe()} (the best 1/{plan.reduction_factor} of each rung go on); the top {plan.top} and "
        f"the paper's coefficients re-trained at {plan.fidelity(plan.max_epochs)} {plan.unit()} with "
        f"{plan.repeats} more seed(s){fit}")
    if plan.budget_minutes and plan.estimate_minutes and plan.estimate_minutes > plan.budget_minutes:
        first = f"{plan.unit_steps} steps" if plan.unit_steps else "one epoch"
        log(f"note: {first} for every candidate needs about {plan.estimate_minutes:g} min; the candidates that "
            f"do not fit the budget (after the seed repeats) will be cut for time and listed in the report")
    if plan.budget_minutes:
        log("the clock re-estimates every job's cost from the finished trials and starts only what ends in time")
    return plan
