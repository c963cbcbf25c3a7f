"""The ``effnet`` command line: assembles each package's commands and turns library errors into one line.

Each capability owns its commands (``effnet/<package>/commands.py``: parse flags, call the library, print);
library code raises :mod:`effnet.errors` types and never imports this layer.

Only the module of the command being run is imported (most of them load torch), so ``effnet --help``,
``--version`` and ``list`` answer at once. :data:`COMMANDS` is where the top-level help lives.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
from pathlib import Path

from . import __version__
from .errors import ExportError, TrainingDiverged, redact
from .extras import install_hint
from .models.nets.size import DEFAULT_LIMITS, SizeLimits, flag_of, set_limits

# command -> (module that adds it, one-line help), in the order `effnet --help` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("effnet.models.zoo.commands", "list model names (globs: 'efficientnet_b*'; --pretrained: name.tag)"),
    "convert": ("effnet.models.zoo.commands", "import timm/torchvision/lukemelas weights into an effnet file"),
    "weights": ("effnet.models.zoo.commands", "published pretrained weights: list them, or download one into the cache"),
    "info": ("effnet.models.paper.commands", "Table-1 view of a model with params and MACs per stage"),
    "family": ("effnet.models.paper.commands", "B0-B7 (or --family efficientnetv2) beside the papers' numbers; bubble chart"),
    "train": ("effnet.classify.commands", "train / fine-tune on an ImageFolder (torchrun for many processes)"),
    "eval": ("effnet.classify.commands", "top-1/top-5/loss/per-class accuracy of a run or weights file"),
    "predict": ("effnet.classify.commands", "classify images, folders or globs (streamed to --output, sharded)"),
    "demo": ("effnet.classify.commands", "family table + real pretrained Lite0 on real photos"),
    "explain": ("effnet.explain.commands", "class activation maps over a photo (Grad-CAM, ... via torchcam); "
                                           "--compare: the paper's Figure 7"),
    "plot": ("effnet.train.commands", "write RUN_DIR/curves.png (a classification or a detection run)"),
    "data": ("effnet.data.commands", "write a bundled real dataset as an ImageFolder"),
    "search": ("effnet.search.commands", "step 1: grid search of alpha/beta/gamma at phi=1 (Optuna, resumable)"),
    "scale": ("effnet.search.commands", "step 2: compound-scale the base to phi = 0..K and write configs"),
    "study": ("effnet.search.commands", "width/depth/resolution/compound scaling at matched MACs (Fig. 3)"),
    "export": ("effnet.deploy.commands", "export a classifier (ONNX / OpenVINO IR / TorchScript / ExecuTorch, "
                                         "optional int8; or a Hub folder) or a detector (ONNX with NMS inside), "
                                         "verified against PyTorch"),
    "cpu": ("effnet.deploy.commands", "this CPU's model and features, and what each --backend runs as on it "
                                      "(engine, precision, threads, int8 scheme) and why"),
    "detect": ("effnet.detect.commands", "object detection with EfficientDet: train, eval (COCO mAP), predict, export"),
    "segment": ("effnet.segment.commands", "semantic segmentation, U-Net / FPN on EfficientNet encoders: train, eval "
                                           "(mIoU), predict (mask PNGs, overlays), export"),
    "serve": ("effnet.serve.commands", "HTTP service + web page: POST /predict (classifier), /detect (detector) or "
                                       "/segment (segmenter), "
                                       "GET / (page), /docs"),
}


def fail(message: str, code: int = 2) -> int:
    print(f"effnet: error: {redact(message)}", file=sys.stderr)
    return code


def _chosen(argv: list[str]) -> str | None:
    """The command ``argv`` runs: its first word, when that word is a command."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: the chosen command's module adds its flags; every other command is a name and a
    help line only (``argv=None``: every module adds its commands, e.g. for a test to check them all)."""
    parser = argparse.ArgumentParser(prog="effnet", description="EfficientNet family, compound scaling, tools.")
    parser.add_argument("--version", action="version", version=f"effnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv) if argv is not None else None
    added: set[str] = set()
    for name, (module, help) in COMMANDS.items():  # a module's commands are neighbours in the table
        if argv is None or COMMANDS[name][0] == COMMANDS.get(chosen, ("",))[0]:
            if module not in added:
                importlib.import_module(module).add_commands(sub)
                added.add(module)
            sub.choices[name].description = sub.choices[name].description or help
        else:
            sub.add_parser(name, help=help)
    _add_size_flags(parser, set())
    return parser


def _add_size_flags(parser: argparse.ArgumentParser, done: set[int]) -> None:
    """``--max-params``, ``--max-activation-gb``, ``--max-layers`` (the fields of
    :class:`~effnet.models.nets.size.SizeLimits`) on every command that parses its own flags: the sizes a model
    built from a user's config may have, checked before it is built. Added here once, for every command."""
    children = _subcommand_parsers(parser)
    if not children:
        group = parser.add_argument_group("model size limits (a model over one is refused before it is built)")
        for f in dataclasses.fields(SizeLimits):
            default = getattr(DEFAULT_LIMITS, f.name)
            if flag_of(f.name) not in parser._option_string_actions:
                group.add_argument(flag_of(f.name), type=type(default), default=default, metavar="N",
                                   help=f"{f.metadata['help']} (default %(default)g)")
    for child in children:
        if id(child) not in done:  # an alias names a parser twice
            done.add(id(child))
            _add_size_flags(child, done)


def _subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of ``parser``'s subcommands: the values of an action whose choices map names to parsers."""
    return [child for action in parser._actions if isinstance(getattr(action, "choices", None), dict)
            for child in action.choices.values() if isinstance(child, argparse.ArgumentParser)]


def _apply_size_flags(args: argparse.Namespace) -> None:
    """The size limits the command's flags give, for every model this process builds."""
    if hasattr(args, "max_params"):
        set_limits(SizeLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SizeLimits)}))


# a value that starts like a number: "-1/2" (--shard K/N), "-3:5" (a START:END range), "-.5"
_DASHED_VALUE = re.compile(r"-\.?\d")


def _dashed_values_glued(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with ``--flag -1/2`` written ``--flag=-1/2`` for each flag of the command being run that takes one
    value: argparse reads a word starting with "-" that is not a plain negative number as another flag and answers
    "expected one argument", where the flag's own check names what is wrong ("--shard -1/2: K must be in 0..N-1")."""
    takes_value: set[str] = set()
    current: argparse.ArgumentParser | None = parser
    for word in argv:  # the command's parsers: effnet, then e.g. detect, then predict
        if current is None:
            break
        takes_value |= {o for action in current._actions if action.nargs is None for o in action.option_strings}
        subs = next((a.choices for a in current._actions if isinstance(a.choices, dict)), None)  # name -> parser
        current = subs.get(word, current) if subs is not None else None
    glued: list[str] = []
    i = 0
    while i < len(argv) and argv[i] != "--":  # after "--" every word is positional
        if argv[i] in takes_value and i + 1 < len(argv) and _DASHED_VALUE.match(argv[i + 1]):
            glued.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            glued.append(argv[i])
            i += 1
    return glued + argv[i:]


_OS_REASONS = {IsADirectoryError: "is a folder, not a file",
               NotADirectoryError: "a part of it is a file, not a folder", PermissionError: "permission denied"}


def _missing(path: str) -> str:
    """What a FileNotFoundError for ``path`` means: the first folder on its way that does not exist, or the file."""
    for folder in reversed(Path(path).parents):
        if str(folder) not in ("", ".") and not folder.exists():
            return f"{path}: no such folder {folder}"
    return f"{path}: no such file"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser(argv)
        args = parser.parse_args(_dashed_values_glued(parser, argv))
        _apply_size_flags(args)
        return args.func(args)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except ModuleNotFoundError as exc:  # an optional package: name the extra that installs it
        hint = install_hint(exc.name)
        if hint is None:
            raise
        return fail(f"{' '.join(argv[:1]) or 'effnet'}: {hint}")
    except TrainingDiverged as exc:
        return fail(str(exc), 1)
    except FileNotFoundError as exc:  # a path the user gave
        return fail(_missing(exc.filename) if exc.filename else str(exc))
    except (IsADirectoryError, NotADirectoryError, PermissionError) as exc:  # likewise; the output flags are
        if not exc.filename:  # checked before any work (effnet.files.check_output_path), inputs when read
            raise
        return fail(f"{exc.filename}: {_OS_REASONS[type(exc)]}")
    except (ValueError, KeyError, ExportError) as exc:  # effnet.errors.UsageError and its kin
        return fail(str(exc).strip("'\""))


if __name__ == "__main__":
    sys.exit(main())
