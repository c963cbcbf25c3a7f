"""``effnet export``: parse flags, export a classifier or a detector (its task decides how), print the parity report;
``effnet cpu``: this CPU's features and what each backend runs as on it."""

from __future__ import annotations

import argparse

from ..tasks import export, export_flags
from .choice import cpu_report
from .options import add_export_arguments, export_options


def cmd_export(args: argparse.Namespace) -> int:
    exported = export(args.model, export_options(args), args.pretrained, args.weights, args.ema)
    print(exported.text(args.json))
    return 0


def cmd_cpu(args: argparse.Namespace) -> int:
    print(cpu_report())
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("export")
    add_export_arguments(p, export_flags())
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("cpu")
    p.set_defaults(func=cmd_cpu)
