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


def plot_run(run_dir: str | os.PathLike) -> Path:
    """Write RUN_DIR/curves.png: loss, top-1 and learning rate per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_csv(run_dir / "metrics.csv")
    if not rows:
        raise DataError(f"{run_dir}: no metrics.csv to plot")
    ep = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    axes[0].plot(ep, [r["val_loss"] for r in rows], "o-", label="val")
    axes[0].set_title("loss")
    axes[1].plot(ep, [r["train_top1"] for r in rows], "o-", label="train")
    axes[1].plot(ep, [r["val_top1"] for r in rows], "o-", label="val")
    if rows[0].get("ema_val_top1") is not None:
        axes[1].plot(ep, [r["ema_val_top1"] for r in rows], "o-", label="val (EMA)")
    axes[1].set_title("top-1 %")
    axes[2].plot(ep, [r["lr"] for r in rows], "o-")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    out = run_dir / "curves.png"
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return out
