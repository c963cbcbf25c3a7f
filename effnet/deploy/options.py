"""What ``effnet export`` asks of a task's exporter, and what it gets back: one options object for every task, so that
one command (and ``effnet detect export``, its alias) exports a model of any task."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import check_output_path
from .export import FORMATS

HUB = "hub"  # a Hugging Face Hub folder in timm's layout (effnet.save_pretrained), not a runtime graph
CHOICES = (*FORMATS, HUB)  # what `effnet export --format` takes


@dataclass(frozen=True)
class ExportOptions:
    """What every task's exporter is given. Flags only one task reads (``--batch`` and ``--tolerance`` for
    classifiers, ``--raw`` for detectors) are that task's ``export_flags`` and arrive in ``settings``."""

    output: str
    format: str = "onnx"  # one of CHOICES (each task says which it writes)
    resolution: int | None = None  # the graph's input size (default: the model's)
    int8: bool = False  # post-training quantization, calibrated on ``calibration``
    calibration: str | None = None  # a folder of real images: int8 calibration and parity checks
    images: tuple[str, ...] = ()  # real image files for parity checks (default: scikit-image's photos)
    settings: Mapping[str, Any] = field(default_factory=dict)  # the task's own flags (Flag.dest -> value)

    def setting(self, name: str, default: Any = None) -> Any:
        value = self.settings.get(name)
        return default if value is None else value


@contextlib.contextmanager
def image_folder(options: ExportOptions) -> Iterator[str | None]:
    """The folder of real images an export is checked (and int8 calibrated) on: ``calibration``, else a temporary
    one of links to ``images``, else None (scikit-image's photos)."""
    if options.calibration or not options.images:
        yield options.calibration
        return
    with tempfile.TemporaryDirectory(prefix="effnet-images-") as tmp:
        for i, path in enumerate(options.images):
            os.symlink(os.path.abspath(path), os.path.join(tmp, f"{i:05d}{Path(path).suffix}"))
        yield tmp


@dataclass(frozen=True)
class Exported:
    """A verified export: the lines the command prints and the report ``--json`` writes."""

    lines: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    def text(self, with_json: bool = False) -> str:
        """What ``effnet export`` prints: the lines, then (``--json``) the report as one JSON line."""
        return "\n".join([*self.lines, *([json.dumps(self.report)] if with_json else [])])


def add_export_arguments(p, task_flags=()) -> None:
    """The flags of ``effnet export`` (and of its alias ``effnet detect export``), for any kind of model; each task's
    own flags (``task_flags``: :class:`effnet.taskspec.Flag`) after the shared ones."""
    p.add_argument("model", metavar="MODEL", help="model name, config .json, effnet .safetensors or run directory; "
                                                  "a classifier, a detector or a segmenter")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--format", choices=CHOICES, default="onnx",
                   help="every runtime format writes OUTPUT.json beside it (task, preprocessing, class names, engine, "
                        "precision: `effnet predict --model OUTPUT` runs it); "
                        "openvino: IR, OUTPUT.xml + OUTPUT.bin; executorch: an XNNPACK .pte at batch 1 for phones and "
                        "edge boards; hub: OUTPUT/ as a "
                        "Hugging Face Hub folder timm loads (classifiers). Detectors: onnx and openvino end to end (NMS "
                        "inside), executorch the raw outputs (decoding + NMS by effnet's Predictor)")
    p.add_argument("--resolution", type=int, help="the graph's fixed input size (default: the model's)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pretrained", action="store_true", help="with a name: its published weights")
    g.add_argument("--weights", help="with a name: weights to import (effnet file, timm/torchvision/effdet checkpoint)")
    p.add_argument("--ema", action="store_true", help="with a run directory: its EMA weights")
    p.add_argument("--int8", action="store_true",
                   help="ONNX Runtime (onnx) / NNCF (openvino) / PT2E + XNNPACK (executorch) post-training "
                        "quantization, needs --calibration")
    p.add_argument("--calibration", help="folder of real images for int8 calibration and parity checks")
    p.add_argument("--images", nargs="+", default=(), help="real images to verify on (default: scikit-image photos)")
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    for flag in task_flags:
        flag.add_to(p)
    p.set_defaults(task_flags=tuple(task_flags))


def export_options(args) -> ExportOptions:
    # before any model is built: --output is a folder for a Hub export, else a file (OUTPUT.bin, .json beside it)
    check_output_path(args.output, "folder" if args.format == HUB else "file", "--output")
    return ExportOptions(args.output, args.format, args.resolution, args.int8, args.calibration,
                         tuple(args.images or ()), {flag.dest: getattr(args, flag.dest) for flag in args.task_flags})
