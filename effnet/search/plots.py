"""The search's plots: top-1 vs MACs (colour = epochs reached, bars = seed spread of the finalists), the
alpha/beta heat map, the successive-halving curves (top-1 at every rung, pruned runs in grey) and the rank
agreement between rungs (each rung's top-1 against the next level's, Spearman's rho)."""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_write
from .plan import Plan
from .settings import PAPER, SearchSettings


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def plot_search(rows: list[dict], s: SearchSettings, plan: Plan, out: Path, agreement=()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    rows = [r for r in rows if r["top1"] is not None and "macs" in r]
    if rows:
        _scatter(rows, s, plan, out / "top1_vs_macs.png")
        _heatmap(rows, out / "heatmap.png")
        _halving(rows, plan, out / "halving.png")
        if agreement:
            _ranks(rows, plan, list(agreement), out / "rank_agreement.png")


def _scatter(rows: list[dict], s: SearchSettings, plan: Plan, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("viridis", len(plan.levels()))
    for i, level in enumerate(plan.levels()):
        pts = [r for r in rows if r.get("epochs", 0) == level]
        ax.scatter([r["macs"] / 1e6 for r in pts], [r["top1"] for r in pts], color=cmap(i), edgecolors="k",
                   label=f"reached {plan.fidelity(level)} {plan.unit()}", zorder=2)
    for r in rows:
        if r["mean"] is not None:
            ax.errorbar(r["macs"] / 1e6, r["mean"], yerr=r["std"], fmt="D", color="crimson", capsize=4, zorder=3)
            name = "paper" if r["candidate"] == PAPER.key else f"a={r['alpha']:g} b={r['beta']:g} g={r['gamma']:g}"
            ax.annotate(name, (r["macs"] / 1e6, r["mean"]), xytext=(5, 5), textcoords="offset points", fontsize=8)
    base_macs = rows[0]["macs"] / rows[0]["measured_ratio"]
    if s.objective == "flops":
        lo, hi = (s.flops_ratio * (1 - s.tolerance), s.flops_ratio * (1 + s.tolerance))
        ax.axvspan(lo * base_macs / 1e6, hi * base_macs / 1e6, color="orange", alpha=0.15,
                   label=f"{s.flops_ratio:g}x base MACs +/-{s.tolerance:.0%}")
    ax.errorbar([], [], yerr=[], fmt="D", color="crimson", label="finalists: mean +/- std over seeds")
    ax.set_xlabel("MACs (M, measured, phi=1)")
    ax.set_ylabel("val top-1 % (at the epochs reached)")
    ax.set_title("grid search: top-1 vs MACs")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _heatmap(rows: list[dict], path: Path) -> None:
    """Over (alpha, beta): the candidate that went furthest (then best top-1) across gamma."""
    import matplotlib.pyplot as plt
    import numpy as np

    alphas = sorted({r["alpha"] for r in rows})
    betas = sorted({r["beta"] for r in rows})
    grid = np.full((len(betas), len(alphas)), np.nan)
    best: dict[tuple[int, int], dict] = {}
    for r in rows:
        ij = (betas.index(r["beta"]), alphas.index(r["alpha"]))
        if ij not in best or (r.get("epochs", 0), r["top1"]) > (best[ij].get("epochs", 0), best[ij]["top1"]):
            best[ij] = r
            grid[ij] = r["top1"]
    fig, ax = plt.subplots(figsize=(7, 5))
    im = ax.imshow(grid, origin="lower", cmap="magma", aspect="auto")
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas])
    for (i, j), r in best.items():
        ax.text(j, i, f"g{r['gamma']:g}\n{r.get('epochs', 0)}ep", ha="center", va="center", color="cyan", fontsize=6)
    ax.set_xlabel("alpha (depth)")
    ax.set_ylabel("beta (width)")
    ax.set_title("top-1 % of the run that went furthest (label: gamma, epochs)")
    fig.colorbar(im, ax=ax)
    _save(fig, path)


def _halving(rows: list[dict], plan: Plan, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for r in rows:
        pts = sorted((int(k), v) for k, v in r["curve"].items())
        if not pts:
            continue
        finalist = r["mean"] is not None
        ax.plot(*zip(*pts), "o-", color="crimson" if finalist else "grey", alpha=1.0 if finalist else 0.35,
                lw=1.5 if finalist else 0.8, ms=3)
        if finalist:
            ax.errorbar(plan.max_epochs, r["mean"], yerr=r["std"], fmt="D", color="crimson", capsize=4)
    ax.set_xscale("log", base=plan.reduction_factor)
    ax.set_xticks(plan.levels(), [str(plan.fidelity(v)) for v in plan.levels()])
    ax.set_xlabel(f"{'optimizer steps' if plan.unit_steps else 'epochs'} (rungs of successive halving)")
    ax.set_ylabel("val top-1 %")
    ax.set_title("successive halving: grey = stopped by the pruner, red = finalists (mean +/- std)")
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def _ranks(rows: list[dict], plan: Plan, agreement: list, path: Path) -> None:
    """One panel per pair of successive levels: each candidate's top-1 at the lower against the upper level (the
    candidates that reached both, copies of another candidate's run left out), Spearman's rho in the title."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(agreement), figsize=(4.2 * len(agreement), 4), squeeze=False)
    for ax, a in zip(axes[0], agreement):
        pts = [(r["curve"][str(a.lower)], r["curve"][str(a.upper)], r["candidate"] == PAPER.key) for r in rows
               if str(a.lower) in r["curve"] and str(a.upper) in r["curve"] and "same_model_as" not in r]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=["crimson" if p[2] else "tab:blue" for p in pts],
                   edgecolors="k")
        rho = "n/a" if a.rho is None else f"{a.rho:.2f}"
        ax.set_title(f"\u03c1 = {rho} over {a.n} candidates", fontsize=9)
        ax.set_xlabel(f"top-1 % at {plan.fidelity(a.lower)} {plan.unit()}")
        ax.set_ylabel(f"top-1 % at {plan.fidelity(a.upper)} {plan.unit()}")
        ax.grid(True, alpha=0.3)
    fig.suptitle("rank agreement between rungs (red: the paper's coefficients)", fontsize=10)
    _save(fig, path)
