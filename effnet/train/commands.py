"""``effnet plot``: parse flags, draw a training run's curves (any task), print."""

from __future__ import annotations

import argparse

from ..models.registry import config_of
from ..tasks import task_for


def cmd_plot(args: argparse.Namespace) -> int:
    print(f"wrote {task_for(config_of(args.run_dir)).plot(args.run_dir)}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("plot")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_plot)
