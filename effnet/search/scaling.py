"""Step 2 (``effnet scale``: the chosen coefficients for phi = 0..K) and ``effnet study`` (width-only, depth-only,
resolution-only and compound scaling at matched MACs, the paper's Fig. 3 on your data)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..classify import train
from ..data import dataset_hints
from ..files import atomic_write
from ..models.nets.config import ModelConfig, compound
from ..train import TrainConfig
from .grid import Candidate, macs_of, params_of, resolve_base
from .settings import PAPER


def parse_phis(text: str) -> list[float]:
    if ".." in text:
        lo, hi = text.split("..")
        return [float(v) for v in range(int(lo), int(hi) + 1)]
    return [float(v) for v in text.split(",")]


def scale_family(coefficients: Candidate, phis: list[float], base: str = "b0", base_resolution: int | None = None,
                 resolution_divisor: int = 8) -> list[tuple[float, ModelConfig]]:
    """The base compound-scaled by ``coefficients`` (alpha, beta, gamma) to every phi, each config named after
    them."""
    c = coefficients
    base_cfg = resolve_base(base, base_resolution)
    out = []
    for phi in phis:
        cfg = compound(phi, c.alpha, c.beta, c.gamma, base=base_cfg, resolution_divisor=resolution_divisor)
        out.append((phi, cfg.replace(name=f"effnet_phi{phi:g}_a{c.alpha:g}_b{c.beta:g}_g{c.gamma:g}")))
    return out


# ---------------------------------------------------------------------------------------------- study

def matched_config(base: ModelConfig, dimension: str, target_macs: int) -> ModelConfig:
    """Scale one dimension of ``base`` alone until its MACs reach ``target_macs`` (bisection)."""
    lo, hi = 1.0, 8.0

    def build(m: float) -> ModelConfig:
        if dimension == "width":
            return base.replace(width_mult=base.width_mult * m)
        if dimension == "depth":
            return base.replace(depth_mult=base.depth_mult * m)
        if dimension == "resolution":
            return base.replace(resolution=max(8, int(round(base.resolution * m))))
        raise ValueError(dimension)

    for _ in range(25):
        mid = (lo + hi) / 2
        if macs_of(build(mid)) < target_macs:
            lo = mid
        else:
            hi = mid
    best = min((build(lo), build(hi)), key=lambda c: abs(macs_of(c) - target_macs))
    return best.replace(name=f"{base.name}-{dimension}-x{(lo + hi) / 2:.3f}")


@dataclass(frozen=True)
class StudySettings:
    """What ``effnet study`` trains: the data, how far to scale, the base, and every run's training settings."""

    data_dir: str
    max_phi: int = 2
    base: str = "b0"
    base_resolution: int | None = None  # default: the dataset's declared resolution, else the base's
    epochs: int = 3
    batch_size: int = 32
    out: str = "scaling-study"
    recipe: str = "finetune"
    seed: int = 0


RESUME_KEYS = ("data_dir", "model", "epochs", "batch_size", "resolution", "seed", "recipe")  # same run if equal


def _same_run(run_dir: Path, tcfg: TrainConfig) -> bool:
    """Whether ``run_dir`` holds a run of ``tcfg`` (its args.json agrees on what the study sets)."""
    try:
        saved = json.loads((run_dir / "args.json").read_text())
    except (OSError, ValueError):
        return False
    wanted = dataclasses.asdict(tcfg)
    return all(saved.get(k) == wanted[k] for k in RESUME_KEYS)


def _train_or_keep(tcfg: TrainConfig, cfg: ModelConfig) -> tuple[dict, str]:
    """A study's run: kept when a rerun finds it finished, resumed from its checkpoint when it was cut, else
    trained. Returns (train()'s summary, "kept" / "resumed" / "trained")."""
    run_dir = Path(tcfg.out)
    if not _same_run(run_dir, tcfg):
        return train(tcfg, model_config=cfg), "trained"
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    if summary.get("stop_reason") == "completed" and (run_dir / "model.safetensors").is_file():
        return summary, "kept"
    if (run_dir / "checkpoint.pt").is_file():
        return train(tcfg, resume_dir=str(run_dir), model_config=cfg), "resumed"
    return train(tcfg, model_config=cfg), "trained"


def scaling_study(study: StudySettings, coefficients: Candidate = PAPER, log=print) -> list[dict]:
    """Train width-only, depth-only, resolution-only and compound models at matched MACs (paper Fig. 3); the
    compound models scale by ``coefficients`` (default the paper's). Trains every model (the classification
    training of ``effnet train``). ``study.json`` is rewritten after every run, and a rerun into the same folder
    keeps the finished runs and resumes a cut one from its checkpoint: a study stopped part-way is not lost."""
    c = coefficients
    base_cfg = resolve_base(study.base, study.base_resolution or dataset_hints(study.data_dir).get("resolution"))
    out_dir = Path(study.out)
    rows = []

    def run(kind: str, phi: float, cfg: ModelConfig) -> None:
        t0 = time.time()
        tcfg = TrainConfig(data_dir=study.data_dir, model=cfg.name, epochs=study.epochs, batch_size=study.batch_size,
                           resolution=cfg.resolution, out=str(out_dir / "runs" / f"{kind}-phi{phi:g}"),
                           seed=study.seed, recipe=study.recipe, quiet=True, ema_decay=0.0, precise_bn=20)
        summary, how = _train_or_keep(tcfg, cfg)
        row = dict(kind=kind, phi=phi, macs=macs_of(cfg), params=params_of(cfg), width_mult=cfg.width_mult,
                   depth_mult=cfg.depth_mult, resolution=cfg.resolution, top1=summary["val_top1"],
                   seconds=summary["wall_seconds"] if how == "kept" else time.time() - t0)
        rows.append(row)
        atomic_write(out_dir / "study.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1)))
        log(f"{kind:<10} phi={phi:g}: top-1 {row['top1']:.2f}%  MACs {row['macs'] / 1e6:.1f}M  "
            f"(w {cfg.width_mult:.2f}, d {cfg.depth_mult:.2f}, r {cfg.resolution})  {row['seconds']:.0f} s"
            f"{'' if how == 'trained' else f' ({how})'}")

    run("base", 0, base_cfg)
    for phi in range(1, study.max_phi + 1):
        comp = compound(phi, c.alpha, c.beta, c.gamma, base=base_cfg, resolution_divisor=1)
        target = macs_of(comp)
        run("compound", phi, comp)
        for dim in ("width", "depth", "resolution"):
            run(dim, phi, matched_config(base_cfg, dim, target))
    _plot_study(rows, out_dir / "scaling_study.png")
    lines = [f"{'kind':<10} {'phi':>3} {'MACs(M)':>8} {'params':>10} {'width':>5} {'depth':>5} {'res':>4} {'top-1 %':>7}"]
    for r in sorted(rows, key=lambda r: (r["kind"], r["phi"])):
        lines.append(f"{r['kind']:<10} {r['phi']:>3g} {r['macs'] / 1e6:>8.1f} {r['params']:>10,} {r['width_mult']:>5.2f} "
                     f"{r['depth_mult']:>5.2f} {r['resolution']:>4} {r['top1']:>7.2f}")
    table = "\n".join(lines)
    atomic_write(out_dir / "study.txt", lambda tmp: Path(tmp).write_text(table + "\n"))
    log(table)
    return rows


def _plot_study(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    base = [r for r in rows if r["kind"] == "base"]
    fig, ax = plt.subplots(figsize=(7, 5))
    for kind, style in (("width", "s--"), ("depth", "^--"), ("resolution", "v--"), ("compound", "o-")):
        pts = base + sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["phi"])
        ax.plot([p["macs"] / 1e6 for p in pts], [p["top1"] for p in pts], style, label=f"scale {kind}")
    ax.set_xlabel("MACs (M, measured)")
    ax.set_ylabel("val top-1 %")
    ax.set_title("Scaling study at matched MACs (paper Fig. 3 / Table 3, on your data)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
