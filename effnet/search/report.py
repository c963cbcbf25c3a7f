"""The search's results, read from its Optuna study (opened by the caller: the runner, or ``effnet scale
--from-search``): the table (fidelity reached, seed spread), the verdict, results.json and the plots."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import redact
from ..files import atomic_write
from .grid import Candidate
from .plan import Plan
from .settings import PAPER, SearchSettings, grid_for, settings_key
from .verdict import RungAgreement, Spread, judge, rank_agreement

MEASURES = ("alpha", "beta", "gamma", "rule_ratio", "macs", "measured_ratio", "params", "latency_ms", "resolution",
            "width_mult", "depth_mult", "same_model_as", "wall_seconds", "epochs", "worker")


def _row(t, twin=None) -> dict:
    """One candidate's rung run (a copy takes its curve from the run it copied)."""
    from optuna.trial import TrialState

    status = "complete" if t.state == TrialState.COMPLETE else t.user_attrs.get("pruned_by", "pruned")
    curve = (twin or t).intermediate_values
    row = dict(trial=t.number, candidate=t.params["candidate"], status=status,
               top1=t.user_attrs.get("top1", t.value), curve={str(k): v for k, v in sorted(curve.items())},
               mean=None, std=None, n_seeds=0, seeds={})
    row.update({k: t.user_attrs[k] for k in MEASURES if k in t.user_attrs})
    return row


def _latest_runs(trials) -> list:
    """Each candidate's rung run: the last finished one, a run cut for time only when there is no other (a rerun
    after a budget ran out redoes what was cut)."""
    from optuna.trial import TrialState

    best: dict[str, object] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.params["phase"] != "rungs" or t.user_attrs.get("duplicate") or \
                t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        old = best.get(t.params["candidate"])
        if old is None or old.user_attrs.get("pruned_by") == "time" or t.user_attrs.get("pruned_by") != "time":
            best[t.params["candidate"]] = t
    return list(best.values())


def _not_run(s: SearchSettings, study, done: set[str], trials) -> list[dict]:
    """Rows for the grid candidates with no finished run: cut for time (the budget ran out before they
    started) or given up after failures."""
    from optuna.trial import TrialState

    saved = study.user_attrs.get("settings") or {}
    grid = grid_for(SearchSettings(data_dir=s.data_dir, **{k: v for k, v in saved.items() if v is not None}))[0]
    failed = {t.params["candidate"] for t in trials if t.state == TrialState.FAIL and t.params["phase"] == "rungs"}
    return [dict(trial=None, candidate=c.key, status="failed" if c.key in failed else "time", top1=None, curve={},
                 mean=None, std=None, n_seeds=0, seeds={}, alpha=c.alpha, beta=c.beta, gamma=c.gamma,
                 rule_ratio=c.ratio, epochs=0) for c in grid if c.key not in done]


def _spreads(trials, s: SearchSettings, plan: Plan) -> dict[str, Spread]:
    """Top-1 at the final fidelity by seed, for every candidate that was re-trained with other seeds."""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("duplicate")
            and t.user_attrs.get("epochs") == plan.max_epochs]  # (the paper's rung run may be a copy)
    finalists = {t.params["candidate"] for t in done if t.params["phase"] == "repeat"}
    values: dict[str, dict[int, float]] = {k: {} for k in finalists}
    for t in sorted(done, key=lambda t: t.number):
        if t.params["candidate"] in finalists:
            values[t.params["candidate"]].setdefault(int(t.params["seed"]), float(t.value))
    return {k: Spread(k, tuple(sorted(v)), tuple(v[x] for x in sorted(v))) for k, v in values.items()}


def collect(study, s: SearchSettings) -> dict:
    """Rows (one per grid candidate, finalists first by mean top-1), spreads, verdict, the chosen coefficients, from
    the search's ``study``."""
    from optuna.trial import TrialState

    plan = Plan(**study.user_attrs["plan"])
    trials = [t for t in study.get_trials(deepcopy=False) if {"phase", "candidate", "seed"} <= t.params.keys()]
    by_number = {t.number: t for t in trials}
    runs = _latest_runs(trials)
    rows = [_row(t, by_number.get(t.user_attrs.get("same_model_as"))) for t in runs]
    rows += _not_run(s, study, {r["candidate"] for r in rows}, trials)
    spreads = _spreads(trials, s, plan)
    if PAPER.key not in {r["candidate"] for r in rows} and PAPER.key in spreads:
        ref = next(t for t in trials if t.params["candidate"] == PAPER.key and t.state == TrialState.COMPLETE)
        rows.append({**_row(ref), "status": "reference", "top1": spreads[PAPER.key].values[0],
                     "epochs": plan.max_epochs})
    for r in rows:
        sp = spreads.get(r["candidate"])
        if sp is not None:
            r.update(mean=sp.mean, std=sp.std, n_seeds=sp.n, seeds={str(k): v for k, v in zip(sp.seeds, sp.values)})
    curves = {r["candidate"]: {int(k): v for k, v in r["curve"].items()} for r in rows if r["curve"]}
    agreement = rank_agreement([c for k, c in curves.items() if _own_run(rows, k)], plan.levels())
    kind, line, chosen = judge(list(spreads.values()), plan, agreement, curves)
    rows.sort(key=lambda r: (r["mean"] is None, -(r["mean"] or 0), -r.get("epochs", 0), -(r["top1"] or 0),
                             r.get("macs", 0)))
    failed = len({(t.params["phase"], t.params["candidate"], t.params["seed"]) for t in trials
                  if t.state == TrialState.FAIL})
    return dict(plan=plan, rows=rows, spreads=spreads, verdict=line, verdict_kind=kind, chosen=chosen,
                failed=failed, agreement=agreement)


def _own_run(rows: list[dict], key: str) -> bool:
    """A candidate whose rung run was its own (a copy of the same model's run would count that run twice)."""
    row = next(r for r in rows if r["candidate"] == key)
    return "same_model_as" not in row and row["status"] != "reference"


STATUS = {"complete": "", "pruner": "pruned", "time": "cut:time", "reference": "ref", "failed": "failed",
          "latency_budget": "latency"}


def _table(rows: list[dict], winner: str | None, plan: Plan) -> str:
    width = 5 if plan.unit_steps else 3
    header = (f"{'':1} {'alpha':>5} {'beta':>5} {'gamma':>5} {'a*b2*g2':>7} {'MACs x':>6} {'MACs(M)':>8} "
              f"{'params':>10} {'res':>4} {'lat ms':>7} {'steps' if plan.unit_steps else 'ep':>{width}} {'top-1 %':>7} "
              f"{'mean +/- std (n)':>18} {'time s':>6} {'status':<8}")
    lines = [header]
    for r in rows:
        mark = "*" if r["candidate"] == winner else ("p" if r["candidate"] == PAPER.key else " ")
        spread = f"{r['mean']:.2f} +/- {r['std']:.2f} ({r['n_seeds']})" if r["mean"] is not None else ""
        top1 = f"{r['top1']:>7.2f}" if r["top1"] is not None else f"{'-':>7}"
        lines.append(f"{mark:1} {r['alpha']:>5.2f} {r['beta']:>5.2f} {r['gamma']:>5.2f} {r['rule_ratio']:>7.3f} "
                     f"{r.get('measured_ratio', 0):>6.2f} {r.get('macs', 0) / 1e6:>8.1f} {r.get('params', 0):>10,} "
                     f"{r.get('resolution', 0):>4} {r.get('latency_ms', 0):>7.1f} "
                     f"{plan.fidelity(r.get('epochs', 0)):>{width}} {top1} "
                     f"{spread:>18} {r.get('wall_seconds', 0):>6.0f} {STATUS.get(r['status'], r['status']):<8}")
    return "\n".join(lines)


def _repeats_cut(s: SearchSettings, plan: Plan, rows: list[dict], spreads: dict) -> list[str]:
    """The finalists' seed runs that the time budget left out: the paper's coefficients and the ``top`` best
    runs that completed the final fidelity, each short of its planned seeds."""
    done = [r for r in rows if r["status"] == "complete" and r.get("epochs") == plan.max_epochs
            and "same_model_as" not in r and r["candidate"] != PAPER.key]
    done.sort(key=lambda r: (-(r["top1"] or 0), r.get("macs", 0)))
    seeds = [s.seed + i for i in range(plan.repeats + 1)]
    finalists = [PAPER.key, *(r["candidate"] for r in done[:plan.top])]
    have = {k: spreads[k].seeds if k in spreads else () for k in finalists}
    own = {r["candidate"] for r in done}  # a finalist's own rung run is its first seed
    return [f"{k} seed {seed}" for k, got in have.items() for seed in seeds
            if seed not in got and not (seed == s.seed and k in own)]


def _agreement_text(agreement: list[RungAgreement], plan: Plan) -> str:
    """Spearman's rho after each rung, one line."""
    if not agreement:
        return "rank agreement: one level only (no rung to compare)"
    parts = [f"{plan.fidelity(a.lower)} -> {plan.fidelity(a.upper)} {plan.unit()}: "
             + (f"\u03c1 = {a.rho:.2f}" if a.rho is not None else "\u03c1 n/a") + f" over {a.n}" for a in agreement]
    return "rank agreement between rungs (Spearman): " + "; ".join(parts)


def write_report(study, s: SearchSettings, log=print, started: float | None = None) -> dict:
    """The table, the verdict, results.json, results.txt and the plots of the search ``s`` in ``study``."""
    kept, dropped = grid_for(s)
    res = collect(study, s)
    rows, chosen, plan = res["rows"], Candidate.from_key(res["chosen"]), res["plan"]
    out = s.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    winner = next((r for r in rows if r["mean"] is not None), None)
    paper = next((r for r in rows if r["candidate"] == PAPER.key), None)
    table = _table(rows, winner["candidate"] if winner else None, plan)
    cut = [r["candidate"] for r in rows if r["status"] == "time"]
    repeats_cut = _repeats_cut(s, plan, rows, res["spreads"]) if s.budget_minutes else []
    log(table)
    if cut or repeats_cut:
        log(f"cut for time: {len(cut)} of {len(kept)} candidates (status cut:time; a rerun trains them), "
            f"{len(repeats_cut)} planned seed run(s) of the finalists")
    agreement = res["agreement"]
    log(_agreement_text(agreement, plan))
    log(f"verdict: {res['verdict']}")
    log(f"chosen: alpha={chosen.alpha:g} beta={chosen.beta:g} gamma={chosen.gamma:g}; scale it with: effnet scale "
        f"--from-search {s.study_name()} --storage {redact(s.storage)} --phi 0..7")
    pruned = sum(1 for r in rows if r["status"] == "pruner")
    budget = None
    if s.budget_minutes:
        budget = dict(minutes=s.budget_minutes, deadline=s.deadline, started=started,
                      seconds_before_report=None if started is None else time.time() - started)
    report = dict(study=s.study_name(), storage=redact(s.storage), settings=settings_key(s), plan=plan.to_dict(),
                  grid_kept=len(kept), grid_dropped=len(dropped),
                  completed=sum(r["status"] not in ("reference", "failed") and r.get("epochs", 0) > 0 for r in rows),
                  pruned=pruned, cut_for_time=cut, repeats_cut_for_time=repeats_cut, budget=budget,
                  failed=res["failed"], verdict=res["verdict"], verdict_kind=res["verdict_kind"],
                  chosen=dict(alpha=chosen.alpha, beta=chosen.beta, gamma=chosen.gamma), best=winner, winner=winner,
                  paper=paper, results=rows,
                  rank_agreement=[dict(a.to_dict(), unit=plan.unit(), lower_fidelity=plan.fidelity(a.lower),
                                       upper_fidelity=plan.fidelity(a.upper)) for a in agreement])
    atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    atomic_write(out / "results.txt", lambda tmp: Path(tmp).write_text(
        f"{table}\n{_agreement_text(agreement, plan)}\nverdict: {res['verdict']}\n", encoding="utf-8"))
    if rows:
        try:
            from .plots import plot_search

            plot_search(rows, s, plan, out, agreement)
        except Exception as exc:  # plots must not lose results
            log(f"warning: could not plot: {exc}")
    return report
