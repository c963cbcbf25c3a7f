"""Model accounting: parameters and multiply-adds per stage, in the paper's Table 1 layout."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .config import ModelConfig


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
    from .registry import create_model

    model = model_or_name if isinstance(model_or_name, nn.Module) else create_model(model_or_name)
    config: ModelConfig = model.config
    res = resolution or config.resolution
    was_training = model.training
    model.eval()
    rows: list[StageRow] = []
    x = torch.zeros(1, config.in_chans, res, res)
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


# Paper Table 2 (arXiv:1905.11946 v5, 2020): params (M), FLOPs (B), ImageNet top-1 (%) of B0-B7.
# The ICML 2019 version printed other top-1s (B0 76.3 ... B7 84.4), kept here for reference.
PAPER_TABLE: dict[str, tuple[float, float, float]] = {
    "efficientnet_b0": (5.3, 0.39, 77.1),
    "efficientnet_b1": (7.8, 0.70, 79.1),
    "efficientnet_b2": (9.2, 1.0, 80.1),
    "efficientnet_b3": (12.0, 1.8, 81.6),
    "efficientnet_b4": (19.0, 4.2, 82.9),
    "efficientnet_b5": (30.0, 9.9, 83.6),
    "efficientnet_b6": (43.0, 19.0, 84.0),
    "efficientnet_b7": (66.0, 37.0, 84.3),
}
PAPER_TOP1_ICML = dict(zip(PAPER_TABLE, (76.3, 78.8, 79.8, 81.1, 82.6, 83.3, 84.0, 84.4)))
PAPER_VERSION = "arXiv:1905.11946v5 Table 2"


def family_profiles(names: list[str] | None = None) -> list[Profile]:
    return [profile(n) for n in (names or list(PAPER_TABLE))]


def format_family(profiles: list[Profile]) -> str:
    from .config import VARIANTS

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

    from ..files import atomic_write

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
