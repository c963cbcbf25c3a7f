"""What travels beside an exported file: ``MODEL.onnx.json`` (``.xml.json``, ``.pte.json``, ``.pt.json``), so that an
export is a model of its own -- ``effnet predict --model m.onnx``, ``effnet serve --model m.xml``,
``effnet.load_model("m.pte")`` -- with no flags to repeat.

The file holds the model's config (task, preprocessing, class names, input size: what a saved ``.safetensors``
carries in its header) and what the export was verified as: format, engine, precision, graph, the parity numbers,
and the sha256 of the model's files. The hashes tie the two together: a config beside a file it was not written for
(an export replaced by another, a kill between the two renames) is refused rather than trusted.

No torch, no runtime here: the engines that run a file are in :mod:`effnet.deploy.predictors`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cpu import cpu_name, deciding_flags
from ..errors import CheckpointError, UsageError
from ..files import atomic_write
from .choice import BACKENDS, choose

# an export's file extension -> its format, and the runtime effnet runs that format on
FORMAT_OF_SUFFIX = {".onnx": "onnx", ".xml": "openvino", ".pte": "executorch", ".pt": "torchscript"}
ENGINES = {"onnx": "onnxruntime", "openvino": "openvino", "executorch": "executorch", "torchscript": "torch"}
# the formats a model can be loaded back from (TorchScript is written for other programs: effnet runs the model)
LOADABLE = (".onnx", ".xml", ".pte")
SIDECAR_KEY = "effnet_export"
# graphs: the model's own input -> output ("model"); a detector's image + image_hw -> boxes, scores, classes with
# decoding and NMS inside ("end_to_end"), or its raw per-level outputs ("raw")
GRAPHS = ("model", "end_to_end", "raw")


@dataclass(frozen=True)
class ExportInfo:
    """What an exported file is: how it was made and checked. ``files`` maps each file's name to its sha256."""

    format: str
    precision: str = "fp32"  # "int8": quantized weights and activations
    graph: str = "model"
    batch: str = "static"  # "dynamic": any batch size; "static": the exported batch (1)
    verified: dict[str, Any] = field(default_factory=dict)  # the parity numbers of the export's own check
    files: dict[str, str] = field(default_factory=dict)
    # how int8 weights were stored, chosen by the features of the CPU it was made on (effnet.cpu.int8_scheme)
    int8_scheme: str | None = None
    made_on: dict[str, Any] = field(default_factory=dict)  # that CPU: model name and the flags choices follow

    @property
    def engine(self) -> str:
        return ENGINES[self.format]

    @property
    def backend(self) -> str:
        """The ``--backend`` name of this file (``onnx``, ``openvino-int8``, ``executorch``...)."""
        return self.format + ("-int8" if self.precision == "int8" else "")

    def describe(self) -> str:
        return f"{self.format} ({self.engine}, {self.precision}{', ' + self.graph.replace('_', '-') if self.graph != 'model' else ''})"


def sidecar_path(path: str | os.PathLike) -> Path:
    """``m.onnx`` -> ``m.onnx.json``: the config beside an exported file."""
    return Path(f"{path}.json")


def model_files(path: str | os.PathLike) -> list[Path]:
    """The files making up one exported model: OpenVINO IR is the .xml (graph) and the .bin (weights) beside it."""
    path = Path(path)
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def format_of(path: str | os.PathLike) -> str | None:
    """The export format a file name says (``None``: not an export's extension)."""
    return FORMAT_OF_SUFFIX.get(Path(path).suffix.lower())


def write_sidecar(path: str | os.PathLike, config, info: ExportInfo) -> Path:
    """Write ``PATH.json`` for the exported ``path`` (already in place): ``config`` and ``info``, with the sha256 of
    the model's files. Written after the model: a reader checks the hashes, so an old config never passes for a new
    file's."""
    hashes = {p.name: _sha256(p) for p in model_files(path)}
    # the CPU it was made and checked on, and what effnet picks to run it there (re-decided wherever it runs)
    made_on = {"cpu": cpu_name(), "flags": deciding_flags()}
    if info.backend in BACKENDS:  # TorchScript is written for other programs: effnet runs the model, not the file
        made_on["choice"] = choose(info.backend).to_dict()
    # ``to_json``: what every task's config offers (a plug-in task's too), as a saved model's header carries it
    data = {SIDECAR_KEY: asdict(info) | {"files": hashes, "engine": info.engine, "made_on": made_on},
            "model": json.loads(config.to_json())}
    text = json.dumps(data, indent=1, default=float)
    target = sidecar_path(path)
    atomic_write(target, lambda tmp: Path(tmp).write_text(text))
    return target


def read_sidecar(path: str | os.PathLike) -> tuple[dict, ExportInfo]:
    """The config (as a dict: the resolver turns it into its config type) and the :class:`ExportInfo` beside the
    exported ``path``; one line naming what is missing or wrong. A ``.pte.json`` written before configs carried an
    export section (the config alone) still reads."""
    path = Path(path)
    fmt = format_of(path)
    if fmt is None or path.suffix not in LOADABLE:
        raise UsageError(f"{path}: not an exported model effnet runs ({', '.join(LOADABLE)})")
    for part in model_files(path):
        if not part.is_file():
            raise UsageError(f"{part}: no such file" + (" (OpenVINO IR is the .xml and the .bin beside it)"
                                                        if part != path else ""))
    side = sidecar_path(path)
    if not side.is_file():
        raise UsageError(f"{path}: no {side.name} beside it (the config `effnet export` writes: task, "
                         "preprocessing, class names); copy it along with the model, or export again")
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{side}: not a readable effnet export config ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{side}: not an effnet export config")
    if SIDECAR_KEY not in data:  # an older ExecuTorch export: the config alone
        return data, ExportInfo(fmt)
    try:
        fields = {k: v for k, v in data[SIDECAR_KEY].items() if k in ExportInfo.__dataclass_fields__}
        info = ExportInfo(**fields)
        config = data["model"]
    except (TypeError, KeyError) as exc:
        raise CheckpointError(f"{side}: not an effnet export config ({exc})") from None
    if info.format != fmt or info.graph not in GRAPHS:
        raise CheckpointError(f"{side}: describes an export in {info.format} ({info.graph} graph), not {path.name}")
    for part in model_files(path):
        if info.files.get(part.name) != _sha256(part):
            raise CheckpointError(f"{part}: does not match {side.name} (sha256 differs: the file was replaced or "
                                  "changed after export); export again")
    return config, info
