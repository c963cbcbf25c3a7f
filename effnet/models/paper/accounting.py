"""Model accounting: parameters and multiply-adds per stage, in the paper's Table 1 layout."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from ..nets.config import ModelConfig
from .peers import TABLE2, Published, effnet_rows


@dataclass
class StageRow:
    stage: int  # paper's stage number i (1 = stem ... 9 = head)
    operator: str
    resolution: tuple[int, int]  # input H x W of the stage
    channels: int  # output channels
    layers: int
    params: int
    macs: int


@dataclass
class Profile:
    name: str
    resolution: int
    params: int
    macs: int  # multiply-adds (FlopCounterMode's FLOPs / 2)
    rows: list[StageRow] = field(default_factory=list)


def _count_macs(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    # imported here: torch.utils.flop_counter pulls in triton and the inductor's tables, 84 MiB of resident
    # memory that every training process would otherwise carry (measured; `import effnet` is 2 MiB without it)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        y = module(x)
    return y, counter.get_total_flops() // 2


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def profile(model_or_name: nn.Module | str | ModelConfig, resolution: int | None = None) -> Profile:
    """Count params and MACs (batch 1, at ``resolution`` or the model's native one) per Table-1 stage."""
    from ..zoo.registry import create_model

    if isinstance(model_or_name, nn.Module):
        model = model_or_name
    else:  # counting needs shapes, not values: on the meta device nothing is allocated or computed
        with torch.device("meta"):
            model = create_model(model_or_name)
    config: ModelConfig = model.config
    res = resolution or config.resolution
    was_training = model.training
    model.eval()
    rows: list[StageRow] = []
    x = torch.zeros(1, config.in_chans, res, res, device=next(model.parameters()).device)
    with torch.no_grad():
        y, macs = _count_macs(model.stem, x)
        rows.append(StageRow(1, "Conv3x3", (res, res), y.shape[1], 1, _params(model.stem), macs))
        for i, stage in enumerate(model.blocks):
            first = stage[0]
            k = first.dw.conv.kernel_size[0]
            mid, cin = first.dw.conv.out_channels, rows[-1].channels
            op = f"MBConv{mid // cin}, k{k}x{k}"
            hw = tuple(y.shape[-2:])
            y, macs = _count_macs(stage, y)
            rows.append(StageRow(i + 2, op, hw, y.shape[1], len(stage), _params(stage), macs))
        hw = tuple(y.shape[-2:])
        y, macs_head = _count_macs(model.head, y)
        pooled = torch.flatten(model.pool(y), 1)
        _, macs_fc = _count_macs(model.classifier, pooled)
        head_params = _params(model.head) + _params(model.classifier)
        rows.append(StageRow(len(model.blocks) + 2, "Conv1x1 & Pooling & FC", hw, y.shape[1], 1, head_params,
                             macs_head + macs_fc))
    model.train(was_training)
    return Profile(config.name, res, _params(model), sum(r.macs for r in rows), rows)


def format_profile(p: Profile) -> str:
    lines = [
        f"{p.name} @ {p.resolution}px",
        f"{'stage':>5}  {'operator':<24} {'resolution':>10} {'channels':>8} {'layers':>6} {'params':>12} {'MMACs':>9}",
    ]
    for r in p.rows:
        res = f"{r.resolution[0]}x{r.resolution[1]}"
        lines.append(f"{r.stage:>5}  {r.operator:<24} {res:>10} {r.channels:>8} {r.layers:>6} {r.params:>12,} "
                     f"{r.macs / 1e6:>9.1f}")
    lines.append(f"{'total':>5}  {'':<24} {'':>10} {'':>8} {sum(r.layers for r in p.rows):>6} {p.params:>12,} "
                 f"{p.macs / 1e6:>9.1f}")
    return "\n".join(lines)


# Paper Table 2 (arXiv:1905.11946 v5, 2020): params (M), FLOPs (B), ImageNet top-1 (%) of B0-B7; the table's one
# home, peers included, is effnet.models.paper.peers.
# The ICML 2019 version printed other top-1s (B0 76.3 ... B7 84.4), kept here for reference.
PAPER_TABLE: dict[str, tuple[float, float, float]] = {r.effnet: (r.params_m, r.flops_b, r.top1)
                                                      for r in effnet_rows()}
PAPER_TOP1_ICML = dict(zip(PAPER_TABLE, (76.3, 78.8, 79.8, 81.1, 82.6, 83.3, 84.0, 84.4)))
PAPER_VERSION = TABLE2


def progress_bar(items, desc: str, unit: str = "model"):
    """A progress bar on stderr (tqdm) for loops that still take seconds."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, leave=False, file=sys.stderr)


def family_profiles(names: list[str] | None = None, progress: bool = True) -> list[Profile]:
    """B0-B7 (or ``names``) counted on the meta device: shapes only, no memory, no arithmetic."""
    names = names or list(PAPER_TABLE)
    return [profile(n) for n in (progress_bar(names, "counting") if progress else names)]


@dataclass(frozen=True)
class Measured:
    """A Table-2 row with what this machine counts for it (None: torchvision cannot build it)."""

    row: Published
    params: int | None
    macs: int | None
    resolution: int | None

    def delta(self) -> tuple[float | None, float | None]:
        """Relative differences measured vs published, params and MACs."""
        r = self.row
        dp = None if self.params is None else self.params / (r.params_m * 1e6) - 1
        dm = None if self.macs is None or r.flops_b is None else self.macs / (r.flops_b * 1e9) - 1
        return dp, dm


def build_peer(row: Published, device: str = "meta") -> nn.Module:
    """The torchvision model of a Table-2 peer, in eval mode (meta device: shapes only)."""
    import torchvision.models as tvm

    with torch.device(device):
        return getattr(tvm, row.torchvision)(**dict(row.kwargs)).eval()


def count_peer(row: Published) -> Measured:
    """Params and MACs of a peer at its Table-2 resolution, counted on the meta device."""
    if row.effnet:
        p = profile(row.effnet)
        return Measured(row, p.params, p.macs, p.resolution)
    if not row.torchvision:
        return Measured(row, None, None, None)
    model = build_peer(row)
    x = torch.zeros(1, 3, row.resolution, row.resolution, device="meta")
    with torch.no_grad():
        _, macs = _count_macs(model, x)
    return Measured(row, _params(model), macs, row.resolution)


def table2(progress: bool = True) -> list[Measured]:
    """The paper's Table 2, every row with its measured params and MACs where this machine can build it."""
    from .peers import TABLE2_ROWS

    return [count_peer(r) for r in (progress_bar(TABLE2_ROWS, "counting") if progress else TABLE2_ROWS)]


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:+.1%}"


def format_table2(measured: list[Measured]) -> str:
    """Table 2 as the paper prints it (ratios to the group's EfficientNet computed from the published numbers),
    with the measured params and MACs beside the published ones."""
    head = (f"{'model':<43} {'top-1':>5} {'top-5':>5} {'params':>7} {'ratio':>6} {'FLOPs':>6} {'ratio':>6} | "
            f"{'measured':>9} {'diff':>6} {'MACs':>7} {'diff':>6} {'px':>4}  built by")
    lines = [head, "-" * len(head)]
    for m in measured:
        r = m.row
        if r.effnet and r is not measured[0].row:
            lines.append("")
        flops = "-" if r.flops_b is None else f"{r.flops_b:g}B"
        fratio = "-" if r.ratios[1] is None else f"{r.ratios[1]:g}x"
        dp, dm = m.delta()
        meas = (f"{m.params / 1e6:>8.2f}M {_pct(dp):>6} {m.macs / 1e9:>6.2f}B {_pct(dm):>6} {m.resolution:>4}"
                if m.params is not None else f"{'':>9} {'':>6} {'':>7} {'':>6} {'':>4}")
        by = "effnet" if r.effnet else (f"torchvision {r.torchvision}" if r.torchvision else "-")
        lines.append(f"{r.name:<43} {r.top1:>5.1f} {r.top5:>5.1f} {r.params_m:>6g}M {r.ratios[0]:>5g}x "
                     f"{flops:>6} {fratio:>6} | {meas}  {by}{' (' + r.note + ')' if r.note else ''}")
    lines.append(f"published columns: {TABLE2} (FLOPs = multiply-adds; ratios to the EfficientNet of each group, as "
                 "printed); measured: counted here on the meta device, batch 1, at 'px'")
    return "\n".join(lines)


def plot_table2(measured: list[Measured], path: str) -> None:
    """The paper's Figure 1 (top-1 vs params) and Figure 5 (top-1 vs FLOPs), from the published Table-2 numbers;
    crosses mark what this machine measured for the models it can build (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...files import atomic_write

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    ours = [m for m in measured if m.row.effnet]
    peers = [m for m in measured if not m.row.effnet]
    for ax, key, scale, label, fig_no in ((axes[0], "params_m", 1e6, "parameters (millions)", 1),
                                          (axes[1], "flops_b", 1e9, "FLOPs = multiply-adds (billions)", 5)):
        attr = "params" if key == "params_m" else "macs"
        ax.plot([getattr(m.row, key) for m in ours], [m.row.top1 for m in ours], "o-", color="tab:red",
                label="EfficientNet B0-B7 (published)")
        for m in ours:
            ax.annotate(m.row.name.replace("EfficientNet-", ""), (getattr(m.row, key), m.row.top1),
                        textcoords="offset points", xytext=(-4, 6), fontsize=8, color="tab:red")
        shown = [m for m in peers if getattr(m.row, key) is not None]
        ax.scatter([getattr(m.row, key) for m in shown], [m.row.top1 for m in shown], color="tab:blue",
                   label="other ConvNets (published)")
        for m in shown:
            ax.annotate(m.row.name.split(" (")[0], (getattr(m.row, key), m.row.top1), textcoords="offset points",
                        xytext=(4, -10), fontsize=7)
        built = [m for m in measured if m.params is not None]
        ax.scatter([getattr(m, attr) / scale for m in built], [m.row.top1 for m in built], marker="x", color="k",
                   s=30, label="measured here (same top-1)")
        ax.set_xscale("log")
        ax.set_xlabel(f"{label}, log scale")
        ax.set_ylabel("ImageNet top-1 %")
        ax.set_title(f"Figure {fig_no}: top-1 vs {'model size' if fig_no == 1 else 'FLOPs'}")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(loc="lower right", fontsize=8)
    missing = [m.row.name.split(" (")[0] for m in peers if m.row.flops_b is None]
    absent = f"; not in Figure 5 (no FLOPs published): {', '.join(missing)}" if missing else ""
    fig.suptitle(f"{TABLE2} (published numbers){absent}", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def format_family(profiles: list[Profile]) -> str:
    from ..nets.config import VARIANTS

    head = (f"{'model':<16} {'width':>5} {'depth':>5} {'res':>4} {'params':>12} {'MACs (G)':>9} "
            f"{'paper params':>12} {'paper FLOPs':>11} {'top-1 v5':>8} {'top-1 ICML':>10}")
    lines = [head]
    for p in profiles:
        w, d, r, _ = VARIANTS[p.name]
        pp, pf, pt = PAPER_TABLE.get(p.name, (float("nan"),) * 3)
        icml = PAPER_TOP1_ICML.get(p.name, float("nan"))
        lines.append(f"{p.name:<16} {w:>5.1f} {d:>5.1f} {r:>4} {p.params:>12,} {p.macs / 1e9:>9.2f} "
                     f"{pp:>11.1f}M {pf:>10.2f}B {pt:>8.1f} {icml:>10.1f}")
    lines.append(f"(paper columns: {PAPER_VERSION}; 'top-1 ICML' is the ICML 2019 proceedings version; "
                 "FLOPs in the paper are multiply-adds)")
    return "\n".join(lines)


def plot_family(profiles: list[Profile], path: str) -> None:
    """Bubble chart: MACs vs paper top-1, bubble area proportional to params (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...files import atomic_write

    fig, ax = plt.subplots(figsize=(7, 5))
    macs = [p.macs / 1e9 for p in profiles]
    top1 = [PAPER_TABLE[p.name][2] for p in profiles]
    sizes = [p.params / 1e5 for p in profiles]
    ax.scatter(macs, top1, s=sizes, alpha=0.5, edgecolors="k")
    for p, x, y in zip(profiles, macs, top1):
        ax.annotate(p.name.replace("efficientnet_", "").upper(), (x, y), ha="center", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds (G, measured)")
    ax.set_ylabel(f"ImageNet top-1 % ({PAPER_VERSION})")
    ax.set_title("EfficientNet family (bubble area = parameters)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
