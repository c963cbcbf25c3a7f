"""``effnet list``, ``info``, ``family`` and ``convert``: the model family on the command line."""

from __future__ import annotations

import argparse
import json

from .accounting import family_profiles, format_family, format_profile, plot_family, profile
from .registry import create_model, list_models, resolve_config
from .weights import load_weights, save, torchvision_bn_eps


def cmd_list(args: argparse.Namespace) -> int:
    print("\n".join(list_models(args.filter or "")))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    config = resolve_config(args.model)
    p = profile(config, resolution=args.resolution)
    if args.json:
        print(json.dumps({"name": p.name, "resolution": p.resolution, "params": p.params, "macs": p.macs,
                          "stages": [r.__dict__ for r in p.rows]}))
        return 0
    print(format_profile(p))
    print(f"params {p.params:,}  MACs {p.macs / 1e9:.3f} G  (width {config.width_mult:g}, depth "
          f"{config.depth_mult:g}, resolution {config.resolution}, dropout {config.dropout:g})")
    return 0


def cmd_family(args: argparse.Namespace) -> int:
    profiles = family_profiles()
    print(format_family(profiles))
    if args.chart:
        plot_family(profiles, args.chart)
        print(f"wrote {args.chart}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    model = create_model(args.model, num_classes=args.num_classes, tf_padding=args.tf_padding)
    bn_eps = args.bn_eps
    if bn_eps is None and args.source == "torchvision":
        bn_eps = torchvision_bn_eps(model.config.name)
    load_weights(model, args.src, source=args.source, bn_eps=bn_eps)
    save(model, args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output} ({model.config.name}, {n:,} params, bn_eps {model.config.bn_eps:g}, "
          f"tf_padding {model.config.tf_padding})")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("list", help="list model names")
    p.add_argument("filter", nargs="?")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="Table-1 view of a model with params and MACs per stage")
    p.add_argument("model", help="model name or config .json")
    p.add_argument("--resolution", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("family", help="B0-B7 side by side with the paper's numbers; bubble chart")
    p.add_argument("--chart", default="efficientnet_family.png", help="PNG path ('' to skip)")
    p.set_defaults(func=cmd_family)

    p = sub.add_parser("convert", help="import timm/torchvision/lukemelas weights into an effnet file")
    p.add_argument("src")
    p.add_argument("--from", dest="source", default="auto", choices=["auto", "timm", "torchvision", "lukemelas"])
    p.add_argument("--model", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--tf-padding", action="store_true", help="TF 'SAME' padding (timm tf_* weights)")
    p.add_argument("--bn-eps", type=float, default=None,
                   help="BatchNorm eps of the source (1e-5 for timm's non-tf_ models; torchvision is automatic)")
    p.set_defaults(func=cmd_convert)
