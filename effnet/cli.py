"""The ``effnet`` command line: assembles each package's commands and turns library errors into one line.

Each capability owns its commands (``effnet/<package>/commands.py``: parse flags, call the library, print);
library code raises :mod:`effnet.errors` types and never imports this layer.
"""

from __future__ import annotations

import argparse
import sys

from .classify import commands as classify_commands
from .data import commands as data_commands
from .deploy import commands as deploy_commands
from .detect import commands as detect_commands
from .errors import ExportError, TrainingDiverged
from .models import commands as model_commands
from .search import commands as search_commands
from .serve import commands as serve_commands
from .train import commands as train_commands

# in the order `effnet --help` lists them
COMMAND_MODULES = (model_commands, classify_commands, train_commands, data_commands, search_commands,
                   deploy_commands, detect_commands, serve_commands)


def fail(message: str, code: int = 2) -> int:
    print(f"effnet: error: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effnet", description="EfficientNet family, compound scaling, tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except TrainingDiverged as exc:
        return fail(str(exc), 1)
    except FileNotFoundError as exc:  # a path the user gave
        return fail(f"{exc.filename}: no such file")
    except (ValueError, KeyError, ExportError) as exc:  # effnet.errors.UsageError and its kin
        return fail(str(exc).strip("'\""))


if __name__ == "__main__":
    sys.exit(main())
