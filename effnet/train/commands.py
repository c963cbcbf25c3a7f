"""``effnet plot``: parse flags, draw a training run's curves (any task), print."""

from __future__ import annotations

import argparse

from ..tasks import plot


def cmd_plot(args: argparse.Namespace) -> int:
    print(f"wrote {plot(args.run_dir)}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("plot")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_plot)
