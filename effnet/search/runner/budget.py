"""What a search costs, predicted from timed training steps: the plan (``..plan``) that fits a time budget.

Successive halving gives every candidate ``min_epochs`` and lets the best 1/eta of each rung continue, up to
``max_epochs``; the finalists (the top candidates and the paper's alpha/beta/gamma) are then re-trained at
``max_epochs`` with other seeds, so that their differences can be compared with the seed-to-seed spread. With
``--budget-minutes`` the plan is chosen from timed training steps so that the whole search takes about that long;
the plan is only a first guess: ``clock.py`` keeps the search inside the budget from the trials' measured times.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from ...models.nets.config import ModelConfig
from ...models.nets.efficientnet import EfficientNet
from ..plan import Plan

MAX_REPEATS = 4  # seeds beyond this tighten the spread estimate little; longer runs are worth more
EFFICIENCY = 0.85  # share of worker time spent training: the rest is start-up, waiting for the last trial, report


@dataclass(frozen=True)
class Costs:
    """Predicted seconds of the grid's distinct models: per training epoch and per evaluation, the paper's model's
    (epoch, evaluation), the overhead of a run besides them, and the workers that share the runs."""

    epoch_s: list[float]
    eval_s: list[float]
    paper: tuple[float, float]
    overhead_s: float
    workers: int


@dataclass(frozen=True)
class Workload:
    """What an epoch of a search trial is made of: the data's sizes and the batches it runs."""

    batch_size: int
    num_classes: int
    n_train: int
    n_val: int
    precise_bn: int  # batches of BatchNorm recalibration before every evaluation
    seconds_per_image: float  # decoding (cached) and augmenting one training image


def reaching(plan: Plan, n: int) -> list[float]:
    """How many of ``n`` candidates reach each level: a 1/eta share goes past each rung (plus one: asynchronous
    halving promotes the first trials of a rung before it has anything to compare them with)."""
    return [n if j == 0 else min(n, n / plan.reduction_factor**j + 1) for j in range(len(plan.levels()))]


def expected_epochs(plan: Plan, n: int) -> float:
    levels = plan.levels()
    return sum(r * (level - prev) for r, level, prev in zip(reaching(plan, n), levels, [0, *levels]))


def plan_seconds(plan: Plan, costs: Costs) -> float:
    """Predicted wall seconds of a search: the rungs over every distinct model, then the finalists' repeats
    (the paper's coefficients: ``costs.paper`` = (epoch, evaluation) seconds, its own seed included in case it
    was pruned)."""
    n = len(costs.epoch_s)
    epoch, evaluation = sum(costs.epoch_s) / max(1, n), sum(costs.eval_s) / max(1, n)
    rungs = epoch * expected_epochs(plan, n) + evaluation * sum(reaching(plan, n))
    finalists = plan.top * plan.repeats * (epoch * plan.max_epochs + evaluation)
    reference = (plan.repeats + 1) * (costs.paper[0] * plan.max_epochs + costs.paper[1])
    runs = n + (plan.top + 1) * plan.repeats + 1
    return (rungs + finalists + reference + runs * costs.overhead_s) / (costs.workers * EFFICIENCY)


def choose_plan(base: Plan, budget_s: float, costs: Costs) -> Plan:
    """The longest final fidelity that fits ``budget_s`` with ``base.repeats`` seeds, then more seeds while they
    fit. When not even one rung fits, the smallest plan (the report says it ran over)."""

    def cost(p: Plan) -> float:
        return plan_seconds(p, costs)

    best = dataclasses.replace(base, max_epochs=base.min_epochs)
    limit = base.min_epochs * base.reduction_factor**4
    for epochs in range(base.min_epochs, limit + 1):
        p = dataclasses.replace(base, max_epochs=epochs)
        if cost(p) <= budget_s:
            best = p
    while best.repeats < MAX_REPEATS and cost(dataclasses.replace(best, repeats=best.repeats + 1)) <= budget_s:
        best = dataclasses.replace(best, repeats=best.repeats + 1)
    return dataclasses.replace(best, estimate_minutes=round(cost(best) / 60, 2), budget_minutes=budget_s / 60)


def two_levels_seconds(base: Plan, costs: Costs) -> float:
    """The smallest budget (seconds) for which :func:`choose_plan` plans two levels, a rung to compare with the
    final fidelity (the verdict's rank agreement needs one): the cost of ``base`` with its final fidelity one unit
    past the first rung. ``choose_plan`` keeps the longest fidelity that fits, and the cost grows with it."""
    return plan_seconds(dataclasses.replace(base, max_epochs=base.min_epochs + 1), costs)


def time_training_step(config: ModelConfig, batch_size: int, num_classes: int, repeats: int = 2) -> tuple[float, float]:
    """(seconds per training step, seconds per no-grad forward) of ``config`` at ``batch_size``, channels-last
    as the search trains, on random data: what an epoch costs in arithmetic."""
    model = EfficientNet(config.replace(num_classes=num_classes)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 3, config.resolution, config.resolution).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,))
    steps, forwards = [], []
    for i in range(repeats + 1):  # the first call allocates: not counted
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        with torch.no_grad():
            model(x)
        if i:
            steps.append(t1 - t0)
            forwards.append(time.perf_counter() - t1)
    return min(steps), min(forwards)


def epoch_costs(configs: list[ModelConfig], macs: list[float], work: Workload) -> tuple[list[float], list[float]]:
    """(seconds per training epoch, seconds per evaluation) of each config: three models (smallest, median and
    largest MACs) are timed, the rest interpolated linearly in MACs (at 32 px the cost is not proportional to
    MACs: every layer has a fixed cost too)."""
    order = sorted(range(len(configs)), key=lambda i: macs[i])
    probes = sorted({order[0], order[len(order) // 2], order[-1]})
    timed = {i: time_training_step(configs[i], work.batch_size, work.num_classes) for i in probes}
    xs = [float(macs[i]) for i in probes]

    def fit(values: list[float]):
        if len(xs) == 1 or max(xs) == min(xs):
            return lambda m: sum(values) / len(values)
        mx, my = sum(xs) / len(xs), sum(values) / len(values)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, values)) / sum((x - mx) ** 2 for x in xs)
        return lambda m: max(min(values), my + slope * (m - mx))

    step = fit([timed[i][0] for i in probes])
    forward = fit([timed[i][1] for i in probes])
    steps = work.n_train // work.batch_size
    epoch = [steps * (step(m) + work.batch_size * work.seconds_per_image) for m in macs]
    evaluation = [(work.precise_bn + math.ceil(work.n_val / work.batch_size)) * forward(m)
                  + work.n_val * work.seconds_per_image for m in macs]
    return epoch, evaluation
