"""The ``effnet`` command line: assembles each package's commands and turns library errors into one line.

Each capability owns its commands (``effnet/<package>/commands.py``: parse flags, call the library, print);
library code raises :mod:`effnet.errors` types and never imports this layer.

Only the module of the command being run is imported (most of them load torch), so ``effnet --help``,
``--version`` and ``list`` answer at once. :data:`COMMANDS` is where the top-level help lives.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import ExportError, TrainingDiverged, redact
from .extras import install_hint

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
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(argv).parse_args(argv)
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
        return fail(f"{exc.filename}: no such file")
    except (ValueError, KeyError, ExportError) as exc:  # effnet.errors.UsageError and its kin
        return fail(str(exc).strip("'\""))


if __name__ == "__main__":
    sys.exit(main())
