"""``effnet info`` (a model as the paper's Table 1 -- V2's Table 4 --, with params and MACs per stage) and ``effnet
family``: B0-B7 beside the paper's numbers (Table 2 with its peers, Figures 1 and 5) or its Table 4 latency protocol;
``--family efficientnetv2``: every EfficientNetV2 beside the V2 paper's Table 7."""

from __future__ import annotations

import argparse
import json

from ...errors import UsageError
from ..nets.families import FAMILIES

# the modules that build models (and so load torch) are imported by the command when it runs

DEFAULT_CHART = "efficientnet_family.png"
FAMILY_CHOICES = tuple(name.lower() for name in FAMILIES)  # accounting.FAMILY_TABLES' keys
V1 = FAMILY_CHOICES[0]


def cmd_info(args: argparse.Namespace) -> int:
    from ..nets.size import check_size
    from ..zoo.registry import resolve_config
    from .accounting import format_profile, profile

    config = resolve_config(args.model)
    check_size(config, resolution=args.resolution)  # measured at the resolution asked for, before it is counted
    p = profile(config, resolution=args.resolution)
    if args.json:
        print(json.dumps({"name": p.name, "resolution": p.resolution, "params": p.params, "macs": p.macs,
                          "stages": [r.__dict__ for r in p.rows]}))
        return 0
    print(format_profile(p))
    trained = f", trained at {config.train_resolution}" if config.train_resolution else ""
    print(f"params {p.params:,}  MACs {p.macs / 1e9:.3f} G  (width {config.width_mult:g}, depth "
          f"{config.depth_mult:g}, resolution {config.resolution}{trained}, dropout {config.dropout:g})")
    return 0


def cmd_family(args: argparse.Namespace) -> int:
    from ...files import check_output_path
    from . import accounting

    if args.chart and args.chart != DEFAULT_CHART:  # before the family is profiled
        check_output_path(args.chart, "file", "--chart")

    if args.family != V1 and (args.latency or args.peers):
        raise UsageError(f"--peers and --latency are EfficientNet's Table 2 and Table 4 (--family {V1})")
    if args.latency:
        if not 1 <= args.runs <= 1000:
            raise UsageError("--runs must be between 1 and 1000")
        from .latency import format_table4, table4

        print(format_table4(table4(runs=args.runs), args.runs))
        return 0
    if args.peers:
        measured = accounting.table2()
        print(accounting.format_table2(measured))
        chart = None if args.chart == DEFAULT_CHART else args.chart  # Figures 1 and 5 only when asked for
        if chart:
            accounting.plot_table2(measured, chart)
            print(f"wrote {chart} (Figure 1: top-1 vs params; Figure 5: top-1 vs FLOPs)")
        return 0
    table = accounting.FAMILY_TABLES[args.family]
    profiles = accounting.family_profiles(list(table.names))
    print(table.format(profiles))
    chart = table.chart if args.chart == DEFAULT_CHART else args.chart  # each family's own default file
    if chart:
        accounting.plot_family(profiles, chart, table)
        print(f"wrote {chart}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("info")
    p.add_argument("model", help="model name or config .json")
    p.add_argument("--resolution", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("family")
    p.add_argument("--family", choices=FAMILY_CHOICES, default=V1,
                   help="which family: EfficientNet B0-B7 beside arXiv:1905.11946's Table 2 (default), or every "
                        "EfficientNetV2 beside arXiv:2104.00298's Table 7 and the official README (B0-B3)")
    p.add_argument("--chart", default=DEFAULT_CHART,
                   help="PNG path ('' to skip); with --peers: Figures 1 and 5 side by side (only when given)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--peers", action="store_true",
                   help="the paper's Table 2: B0-B7 beside ResNet, DenseNet, Inception, ... (published numbers, "
                        "measured params/MACs for the peers torchvision builds)")
    g.add_argument("--latency", action="store_true",
                   help="Table 4 protocol: B1 vs ResNet-152, B4 vs ResNet-50, batch 1, one thread, median of 20 "
                        "runs, in PyTorch eager and OpenVINO")
    p.add_argument("--runs", type=int, default=20, help="timed runs per model with --latency (paper: 20)")
    p.set_defaults(func=cmd_family)
