"""The paper's Figure 7: one photo through a baseline and models scaled by depth, width, resolution and compound
scaling at matched FLOPs, their class activation maps side by side.

The models come from an ``effnet study`` folder (its ``study.json`` and ``runs/KIND-phiN``: trained on the
user's data at matched MACs) or are named one by one (runs, files, or registered names with --pretrained).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from torch import nn

from ..errors import UsageError
from .cam import Explanation, explain, overlay
from .options import DEFAULT_LAYER

# Figure 7's columns, in its order: baseline, deeper, wider, higher resolution, compound
FIGURE7_KINDS = ("base", "depth", "width", "resolution", "compound")
TITLES = {"base": "baseline", "depth": "deeper", "width": "wider", "resolution": "higher resolution",
          "compound": "compound scaling"}


@dataclass(frozen=True)
class Column:
    label: str
    model: nn.Module
    macs: int | None = None


def study_columns(study_dir: str | Path, phi: float | None = None) -> list[Column]:
    """The baseline and the depth / width / resolution / compound models of an ``effnet study`` at ``phi``
    (default: the largest it trained), loaded from their runs."""
    from ..models.zoo.registry import CLASSIFY, load_model

    folder = Path(study_dir)
    table = folder / "study.json"
    if not table.is_file():
        raise UsageError(f"{folder}: no study.json (run `effnet study DATA --out {folder}` first)")
    rows = json.loads(table.read_text())
    phi = phi if phi is not None else max(r["phi"] for r in rows)
    columns = []
    for kind in FIGURE7_KINDS:
        row = next((r for r in rows if r["kind"] == kind and (kind == "base" or r["phi"] == phi)), None)
        if row is None:
            raise UsageError(f"{folder}: no {kind} model at phi={phi:g} in study.json")
        run = folder / "runs" / f"{kind}-phi{row['phi']:g}"
        label = (f"{TITLES[kind]}\n(w {row['width_mult']:.2f}, d {row['depth_mult']:.2f}, r {row['resolution']})\n"
                 f"val top-1 {row['top1']:.1f}%")  # how far the study trained it: a map of a weak model says little
        columns.append(Column(label, load_model(run, task=CLASSIFY), row["macs"]))
    return columns


def named_columns(specs: list[str], pretrained: bool) -> list[Column]:
    from ..models.paper.accounting import profile
    from ..models.zoo.registry import CLASSIFY, load_model

    columns = []
    for spec in specs:
        model = load_model(spec, pretrained=pretrained and not Path(spec).exists(), task=CLASSIFY)
        columns.append(Column(Path(spec).name if Path(spec).exists() else spec, model, profile(model.config).macs))
    return columns


def compare(columns: list[Column], photo: Image.Image, class_index: int | None = None, method: str = "gradcam",
            layer: str = DEFAULT_LAYER) -> tuple[int, list[Explanation]]:
    """Every column's map for one class: ``class_index``, or the first (baseline) model's top-1."""
    first = explain(columns[0].model, photo, class_index, method, layer)
    k = first.class_index
    return k, [first, *(explain(c.model, photo, k, method, layer) for c in columns[1:])]


def draw_sheet(columns: list[Column], maps: list[Explanation], photo: Image.Image, path: str | Path,
               title: str) -> None:
    """The photo, then each model's map over it, in one row (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_write

    n = len(columns) + 1
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.3))
    axes[0].imshow(photo)
    axes[0].set_title("original image", fontsize=8)
    for ax, col, e in zip(axes[1:], columns, maps):
        ax.imshow(overlay(photo, e.heatmap))
        macs = f"\n{col.macs / 1e6:.1f}M MACs" if col.macs else ""
        ax.set_title(f"{col.label}{macs}\np({e.class_name}) = {e.probability:.2f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9))  # room for the title above the columns' titles
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
