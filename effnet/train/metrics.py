"""What a run leaves behind besides weights: metrics.csv (rewritten atomically per epoch), TensorBoard
scalars when tensorboard is installed, and curves.png."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import DataError
from ..files import atomic_write


def tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


def append_csv(path: Path, row: dict) -> None:
    rows = read_csv(path) if path.exists() else []
    rows = [r for r in rows if int(r["epoch"]) < row["epoch"]] + [row]
    fields = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _number(text: str | None) -> int | float | None:
    if text in ("", None):
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def plot_curves(run_dir: str | os.PathLike, panels: tuple[tuple[str, tuple[str, ...]], ...]) -> Path:
    """Write RUN_DIR/curves.png from metrics.csv: one panel per ``(title, metric keys)``, by epoch; a key the run
    did not record (no EMA, say) is left out. Each task says which panels it draws (``Task.plot``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_csv(run_dir / "metrics.csv")
    if not rows:
        raise DataError(f"{run_dir}: no metrics.csv to plot")
    ep = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8))
    for ax, (title, keys) in zip(axes, panels):
        for key in (k for k in keys if rows[0].get(k) is not None):
            ax.plot(ep, [r[key] for r in rows], "o-", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    fig.tight_layout()
    out = run_dir / "curves.png"
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return out
