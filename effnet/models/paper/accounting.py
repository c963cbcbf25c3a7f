"""Model accounting: parameters and multiply-adds per stage, in the layout of the paper's Table 1 (EfficientNet)
or Table 4 (EfficientNetV2), and each family beside its published numbers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..nets.blocks import ConvBlock, FusedMBConv, MBConv
from ..nets.config import ModelConfig
from ..nets.efficientnet_v2 import V2_VARIANTS
from .peers import TABLE2, V2_README, V2_ROWS, V2_SOURCE, V2_TABLE7, Published, effnet_rows


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
    # each paper numbers its own table: V1's Table 1 from 1 (stem) to 9 (head), V2's Table 4 from 0
    first = 1 if all(isinstance(stage[0], MBConv) for stage in model.blocks) else 0
    with torch.no_grad():
        y, macs = _count_macs(model.stem, x)
        rows.append(StageRow(first, "Conv3x3", (res, res), y.shape[1], 1, _params(model.stem), macs))
        for i, stage in enumerate(model.blocks):
            hw = tuple(y.shape[-2:])
            op = stage_operator(stage[0], rows[-1].channels)
            y, macs = _count_macs(stage, y)
            rows.append(StageRow(first + i + 1, op, hw, y.shape[1], len(stage), _params(stage), macs))
        hw = tuple(y.shape[-2:])
        y, macs_head = _count_macs(model.head, y)
        pooled = torch.flatten(model.pool(y), 1)
        _, macs_fc = _count_macs(model.classifier, pooled)
        head_params = _params(model.head) + _params(model.classifier)
        rows.append(StageRow(first + len(model.blocks) + 1, "Conv1x1 & Pooling & FC", hw, y.shape[1], 1,
                             head_params, macs_head + macs_fc))
    model.train(was_training)
    return Profile(config.name, res, _params(model), sum(r.macs for r in rows), rows)


def stage_operator(block: nn.Module, in_channels: int) -> str:
    """A stage's operator as the papers' tables print it, from its first block: "MBConv6, k5x5" (V1 Table 1,
    V2 Table 4), "Fused-MBConv4, k3x3" (V2 Table 4). V2's one-conv block (:class:`ConvBlock`) is what Table 4
    calls "Fused-MBConv1, k3x3": the official code builds Fused-MBConv at expansion 1 as that one conv."""
    if isinstance(block, MBConv):
        name, conv = "MBConv", block.dw.conv
    elif isinstance(block, FusedMBConv):
        name, conv = "Fused-MBConv", block.expand.conv
    elif isinstance(block, ConvBlock):
        name, conv = "Fused-MBConv", block.conv.conv
    else:
        raise TypeError(f"no operator name for a {type(block).__name__} block")
    k = conv.kernel_size[0]
    expansion = 1 if isinstance(block, ConvBlock) else conv.out_channels // in_channels
    return f"{name}{expansion}, k{k}x{k}"


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
    """EfficientNet B0-B7 (or any V1 names) measured, beside the paper's Table 2."""
    from ..nets.families import classifier_config

    head = (f"{'model':<16} {'width':>5} {'depth':>5} {'res':>4} {'params':>12} {'MACs (G)':>9} "
            f"{'paper params':>12} {'paper FLOPs':>11} {'top-1 v5':>8} {'top-1 ICML':>10}")
    lines = [head]
    for p in profiles:
        c = classifier_config(p.name)
        pp, pf, pt = PAPER_TABLE.get(p.name, (float("nan"),) * 3)
        icml = PAPER_TOP1_ICML.get(p.name, float("nan"))
        lines.append(f"{p.name:<16} {c.width_mult:>5.1f} {c.depth_mult:>5.1f} {c.resolution:>4} {p.params:>12,} "
                     f"{p.macs / 1e9:>9.2f} {pp:>11.1f}M {pf:>10.2f}B {pt:>8.1f} {icml:>10.1f}")
    lines.append(f"(paper columns: {PAPER_VERSION}; 'top-1 ICML' is the ICML 2019 proceedings version; "
                 "FLOPs in the paper are multiply-adds)")
    return "\n".join(lines)


def format_v2_family(profiles: list[Profile]) -> str:
    """EfficientNetV2 measured (params, MACs at the eval size), beside the published params, FLOPs and top-1
    (:data:`~effnet.models.paper.peers.V2_ROWS`: the paper's Table 7, the official README for B0-B3)."""
    from ..nets.families import classifier_config

    published = {r.effnet: r for r in V2_ROWS}
    head = (f"{'model':<20} {'width':>5} {'depth':>5} {'train':>5} {'eval':>4} {'params':>12} {'MACs (G)':>8} | "
            f"{'published':>9} {'diff':>6} {'FLOPs':>6} {'diff':>6} {'top-1':>5} {'21k':>5}  source")
    lines = [head, "-" * len(head)]
    for p in profiles:
        c, r = classifier_config(p.name), published.get(p.name)
        mine = (f"{p.name:<20} {c.width_mult:>5.1f} {c.depth_mult:>5.1f} {c.train_resolution or c.resolution:>5} "
                f"{p.resolution:>4} {p.params:>12,} {p.macs / 1e9:>8.2f} |")
        if r is None:
            lines.append(f"{mine} {'':>9} {'':>6} {'':>6} {'':>6} {'':>5} {'':>5}  - (timm's own, no paper row)")
            continue
        dp, dm = p.params / (r.params_m * 1e6) - 1, p.macs / (r.flops_b * 1e9) - 1
        top1 = "-" if r.top1 is None else f"{r.top1:.1f}"
        t21 = "-" if r.top1_21k is None else f"{r.top1_21k:.1f}"
        lines.append(f"{mine} {r.params_m:>8g}M {_pct(dp):>6} {r.flops_b:>5g}B {_pct(dm):>6} {top1:>5} {t21:>5}  "
                     f"{'README' if r.source == V2_README else 'Table 7'}")
    lines.append(f"(published columns: {V2_TABLE7} for S/M/L/XL, {V2_README} for B0-B3; FLOPs = multiply-adds; "
                 "'21k': pretrained on ImageNet-21k; measured: counted here on the meta device, batch 1, at 'eval')")
    return "\n".join(lines)


def plot_family(profiles: list[Profile], path: str, table: FamilyTable | None = None) -> None:
    """Bubble chart: MACs vs published top-1, bubble area proportional to params (written atomically); models
    without a published top-1 (V2-XL, timm's rw_*) are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...files import atomic_write

    table = table or FAMILY_TABLES["efficientnet"]
    shown = [p for p in profiles if p.name in table.top1]
    fig, ax = plt.subplots(figsize=(7, 5))
    macs = [p.macs / 1e9 for p in shown]
    ys = [table.top1[p.name] for p in shown]
    ax.scatter(macs, ys, s=[p.params / 1e5 for p in shown], alpha=0.5, edgecolors="k")
    for p, x, y in zip(shown, macs, ys):
        label = p.name.replace("efficientnetv2_", "v2-").replace("efficientnet_", "").upper()
        ax.annotate(label, (x, y), ha="center", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds (G, measured)")
    ax.set_ylabel(f"ImageNet top-1 % ({table.source})")
    ax.set_title(f"{table.family} family (bubble area = parameters)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


@dataclass(frozen=True)
class FamilyTable:
    """One family as ``effnet family --family`` shows it: its models, the table of them beside the published
    numbers, the published top-1 its chart plots (and where it is from), and the chart's default file."""

    family: str  # a key of effnet.models.nets.families.FAMILIES
    names: tuple[str, ...]
    format: Callable[[list[Profile]], str]
    top1: Mapping[str, float]
    source: str
    chart: str


FAMILY_TABLES: dict[str, FamilyTable] = {  # by the lower-case family name `effnet family --family` takes
    "efficientnet": FamilyTable("EfficientNet", tuple(PAPER_TABLE), format_family,
                                {name: row[2] for name, row in PAPER_TABLE.items()}, PAPER_VERSION,
                                "efficientnet_family.png"),
    "efficientnetv2": FamilyTable("EfficientNetV2", tuple(V2_VARIANTS), format_v2_family,
                                  {r.effnet: r.top1 for r in V2_ROWS if r.top1 is not None},
                                  f"{V2_SOURCE} T7; B0-B3: README", "efficientnetv2_family.png"),
}
