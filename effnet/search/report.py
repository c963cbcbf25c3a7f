"""The search's results: table, results.json and the two plots."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_write
from .settings import SearchSettings, settings_key
from .study import open_study


def collect_results(s: SearchSettings) -> list[dict]:
    from optuna.trial import TrialState

    study, _ = open_study(s, create=False)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rows.append(dict(trial=t.number, candidate=t.params["candidate"], top1=t.value, **t.user_attrs))
    rows.sort(key=lambda r: (-r["top1"], r["macs"]))
    return rows


def write_report(s: SearchSettings, kept, dropped, log=print) -> dict:
    rows = collect_results(s)
    out = s.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    best = rows[0] if rows else None
    header = (f"{'':1} {'alpha':>5} {'beta':>5} {'gamma':>5} {'a*b2*g2':>7} {'MACs x':>6} {'MACs(M)':>8} "
              f"{'params':>10} {'res':>4} {'lat ms':>7} {'top-1 %':>7} {'time s':>6}")
    lines = [header]
    for r in rows:
        mark = "*" if r is best else " "
        lines.append(f"{mark:1} {r['alpha']:>5.2f} {r['beta']:>5.2f} {r['gamma']:>5.2f} {r['rule_ratio']:>7.3f} "
                     f"{r['measured_ratio']:>6.2f} {r['macs'] / 1e6:>8.1f} {r['params']:>10,} {r['resolution']:>4} "
                     f"{r['latency_ms']:>7.1f} {r['top1']:>7.2f} {r.get('wall_seconds', 0):>6.0f}")
    table = "\n".join(lines)
    log(table)
    if best:
        log(f"best: alpha={best['alpha']:g} beta={best['beta']:g} gamma={best['gamma']:g} "
            f"(top-1 {best['top1']:.2f}%); scale it with: effnet scale --from-search {s.study_name()} "
            f"--storage {s.storage} --phi 0..7")
    report = dict(study=s.study_name(), storage=s.storage, settings=settings_key(s), grid_kept=len(kept),
                  grid_dropped=len(dropped), completed=len(rows), best=best, results=rows)
    atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    atomic_write(out / "results.txt", lambda tmp: Path(tmp).write_text(table + "\n"))
    if rows:
        try:
            plot_search(rows, s, out)
        except Exception as exc:  # plots must not lose results
            log(f"warning: could not plot: {exc}")
    return report


def plot_search(rows: list[dict], s: SearchSettings, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np


    base_macs = rows[0]["macs"] / rows[0]["measured_ratio"]
    fig, ax = plt.subplots(figsize=(7, 5))
    macs = np.array([r["macs"] for r in rows]) / 1e6
    top1 = np.array([r["top1"] for r in rows])
    ax.scatter(macs, top1, c=[r["rule_ratio"] for r in rows], cmap="viridis", edgecolors="k")
    if s.objective == "flops":
        lo, hi = (s.flops_ratio * (1 - s.tolerance)) * base_macs / 1e6, (s.flops_ratio * (1 + s.tolerance)) * base_macs / 1e6
        ax.axvspan(lo, hi, color="orange", alpha=0.15, label=f"{s.flops_ratio:g}x base MACs +/-{s.tolerance:.0%}")
        ax.legend()
    best = rows[0]
    ax.annotate(f"best a={best['alpha']:g} b={best['beta']:g} g={best['gamma']:g}", (best["macs"] / 1e6, best["top1"]),
                xytext=(5, 5), textcoords="offset points")
    ax.set_xlabel("MACs (M, measured, phi=1)")
    ax.set_ylabel("val top-1 %")
    ax.set_title("grid search: top-1 vs MACs")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(out / "top1_vs_macs.png", lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)

    # heat map over (alpha, beta): best top-1 across gamma, gamma of that best written in the cell
    alphas = sorted({r["alpha"] for r in rows})
    betas = sorted({r["beta"] for r in rows})
    grid = np.full((len(betas), len(alphas)), np.nan)
    gam = {}
    for r in rows:
        i, j = betas.index(r["beta"]), alphas.index(r["alpha"])
        if np.isnan(grid[i, j]) or r["top1"] > grid[i, j]:
            grid[i, j] = r["top1"]
            gam[(i, j)] = r["gamma"]
    fig, ax = plt.subplots(figsize=(7, 5))
    im = ax.imshow(grid, origin="lower", cmap="magma", aspect="auto")
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas])
    for (i, j), g in gam.items():
        ax.text(j, i, f"g{g:g}", ha="center", va="center", color="cyan", fontsize=7)
    ax.set_xlabel("alpha (depth)")
    ax.set_ylabel("beta (width)")
    ax.set_title("top-1 % (best over gamma; cell label = gamma)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    atomic_write(out / "heatmap.png", lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
