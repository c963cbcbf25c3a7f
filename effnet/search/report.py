"""The search's results, read from the study: the table (fidelity reached, seed spread), the verdict,
results.json and the plots."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_write
from .budget import Plan
from .grid import Candidate
from .settings import PAPER, SearchSettings, settings_key
from .study import open_study
from .verdict import Spread, decide

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


def collect(s: SearchSettings) -> dict:
    """Rows (one per grid candidate, finalists first by mean top-1), spreads, verdict, the chosen coefficients."""
    from optuna.trial import TrialState

    study, _ = open_study(s, create=False)
    plan = Plan(**study.user_attrs["plan"])
    trials = [t for t in study.get_trials(deepcopy=False) if {"phase", "candidate", "seed"} <= t.params.keys()]
    by_number = {t.number: t for t in trials}
    runs = [t for t in trials if t.params["phase"] == "rungs" and not t.user_attrs.get("duplicate")
            and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    rows = [_row(t, by_number.get(t.user_attrs.get("same_model_as"))) for t in runs]
    spreads = _spreads(trials, s, plan)
    if PAPER.key not in {r["candidate"] for r in rows} and PAPER.key in spreads:
        ref = next(t for t in trials if t.params["candidate"] == PAPER.key and t.state == TrialState.COMPLETE)
        rows.append({**_row(ref), "status": "reference", "top1": spreads[PAPER.key].values[0],
                     "epochs": plan.max_epochs})
    for r in rows:
        sp = spreads.get(r["candidate"])
        if sp is not None:
            r.update(mean=sp.mean, std=sp.std, n_seeds=sp.n, seeds={str(k): v for k, v in zip(sp.seeds, sp.values)})
    kind, line, chosen = decide(list(spreads.values()), plan.max_epochs)
    rows.sort(key=lambda r: (r["mean"] is None, -(r["mean"] or 0), -r.get("epochs", 0), -(r["top1"] or 0),
                             r.get("macs", 0)))
    failed = len({(t.params["phase"], t.params["candidate"], t.params["seed"]) for t in trials
                  if t.state == TrialState.FAIL})
    return dict(plan=plan, rows=rows, spreads=spreads, verdict=line, verdict_kind=kind, chosen=chosen,
                failed=failed)


def collect_results(s: SearchSettings) -> list[dict]:
    return collect(s)["rows"]


def _table(rows: list[dict], winner: str | None) -> str:
    header = (f"{'':1} {'alpha':>5} {'beta':>5} {'gamma':>5} {'a*b2*g2':>7} {'MACs x':>6} {'MACs(M)':>8} "
              f"{'params':>10} {'res':>4} {'lat ms':>7} {'ep':>3} {'top-1 %':>7} {'mean +/- std (n)':>18} {'time s':>6}")
    lines = [header]
    for r in rows:
        mark = "*" if r["candidate"] == winner else ("p" if r["candidate"] == PAPER.key else " ")
        spread = f"{r['mean']:.2f} +/- {r['std']:.2f} ({r['n_seeds']})" if r["mean"] is not None else ""
        top1 = f"{r['top1']:>7.2f}" if r["top1"] is not None else f"{'-':>7}"
        lines.append(f"{mark:1} {r['alpha']:>5.2f} {r['beta']:>5.2f} {r['gamma']:>5.2f} {r['rule_ratio']:>7.3f} "
                     f"{r.get('measured_ratio', 0):>6.2f} {r.get('macs', 0) / 1e6:>8.1f} {r.get('params', 0):>10,} "
                     f"{r.get('resolution', 0):>4} {r.get('latency_ms', 0):>7.1f} {r.get('epochs', 0):>3} {top1} "
                     f"{spread:>18} {r.get('wall_seconds', 0):>6.0f}")
    return "\n".join(lines)


def write_report(s: SearchSettings, plan: Plan, kept, dropped, log=print) -> dict:
    res = collect(s)
    rows, chosen = res["rows"], Candidate.from_key(res["chosen"])
    out = s.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    winner = next((r for r in rows if r["mean"] is not None), None)
    paper = next((r for r in rows if r["candidate"] == PAPER.key), None)
    table = _table(rows, winner["candidate"] if winner else None)
    log(table)
    log(f"verdict: {res['verdict']}")
    log(f"chosen: alpha={chosen.alpha:g} beta={chosen.beta:g} gamma={chosen.gamma:g}; scale it with: effnet scale "
        f"--from-search {s.study_name()} --storage {s.storage} --phi 0..7")
    pruned = sum(1 for r in rows if r["status"] == "pruner")
    report = dict(study=s.study_name(), storage=s.storage, settings=settings_key(s), plan=plan.to_dict(),
                  grid_kept=len(kept), grid_dropped=len(dropped), completed=sum(r["status"] != "reference" for r in rows),
                  pruned=pruned, failed=res["failed"], verdict=res["verdict"], verdict_kind=res["verdict_kind"],
                  chosen=dict(alpha=chosen.alpha, beta=chosen.beta, gamma=chosen.gamma), best=winner, winner=winner,
                  paper=paper, results=rows)
    atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    atomic_write(out / "results.txt", lambda tmp: Path(tmp).write_text(f"{table}\nverdict: {res['verdict']}\n"))
    if rows:
        try:
            from .plots import plot_search

            plot_search(rows, s, plan, out)
        except Exception as exc:  # plots must not lose results
            log(f"warning: could not plot: {exc}")
    return report
