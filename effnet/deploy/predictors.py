"""Exported models behind the model's own interface (``config`` + ``forward``), for ``predict --backend`` and
``eval --backend``; and an exported file as a model of its own (:class:`ExportedFile`: ``effnet predict --model
m.onnx``, ``effnet.load_model("m.xml")``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cpu import int8_scheme
from ..data import check_image
from ..errors import UsageError
from ..files import cache_root
from .choice import BACKENDS, NO_NATIVE_BF16, auto_backend, computed_precision
from .executorch import PteRunner
from .export import EXTENSIONS, ExportOutputs, export_model
from .exported import ExportInfo, read_sidecar
from .optimize import optimize
from .openvino import Runner
from .ort import ort_run, ort_session



class OnnxPredictor(nn.Module):
    """Runs an exported ONNX file with ONNX Runtime behind the model's own interface (config + forward)."""

    def __init__(self, path: str, config, threads: int | None = None) -> None:
        super().__init__()
        self.config = config
        # a fixed thread count means other engines share the cores (effnet serve): then never busy-wait
        self.session = ort_session(path, threads, spinning=threads is None)
        self.dynamic = not isinstance(self.session.get_inputs()[0].shape[0], int)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(ort_run(self.session, x.float().contiguous(), self.dynamic))


def cache_path(model: nn.Module, kind: str, suffix: str, calibration: str | None, ext: str) -> Path:
    """A cache file keyed by the weights, the config and (for int8) the calibration images' identity."""
    h = hashlib.sha256(model.config.to_json().encode())
    for v in model.state_dict().values():
        h.update(v.detach().cpu().numpy().tobytes())
    if calibration:  # int8 depends on the images it was calibrated on
        for p in sorted(Path(calibration).rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    cache = cache_root() / kind
    cache.mkdir(parents=True, exist_ok=True)
    return cache / f"{model.config.name}-{h.hexdigest()[:16]}-{suffix}.{ext}"


def _cached_export(model: nn.Module, fmt: str, int8: bool, calibration: str | None, batch: str = "dynamic",
                   outputs: ExportOutputs = ExportOutputs()) -> str:
    """``model`` exported (and verified, as its task's ``outputs`` says) once in ``fmt``; later calls reuse the
    file."""
    path = cache_path(model, fmt, precision_key(fmt, int8), calibration if int8 else None, EXTENSIONS[fmt])
    if not path.exists():
        with first_run(model.config.name, fmt + ("-int8" if int8 else ""), path.parent, int8) as stage:
            export_model(model, path, fmt, batch=batch, int8=int8, calibration=calibration, outputs=outputs,
                         stage=stage)
    return str(path)


def precision_key(fmt: str, int8: bool) -> str:
    """How a cached export's name says its precision: an int8 file is made for this CPU's int8 units
    (:func:`effnet.cpu.int8_scheme`; ExecuTorch's XNNPACK quantizer has one scheme), so it is keyed by its scheme."""
    if not int8:
        return "fp32"
    return "int8" if fmt == "executorch" else f"int8-{int8_scheme().name}"


@contextlib.contextmanager
def first_run(name: str, backend: str, cache: Path, int8: bool):
    """Say what a first run of a backend does before it does it (an int8 export of B0 takes half a minute and
    2 GB): export, check against PyTorch, calibrate; where the result is kept for the next run. On a terminal, a
    progress bar names each step with the time spent (yields the ``stage`` callback for :func:`export_model`)."""
    steps = "exporting it, checking it against PyTorch on real images" + (", calibrating int8" if int8 else "")
    print(f"effnet: first run of --backend {backend} for {name}: {steps} (once: kept in {cache}, later runs "
          "start at once)", file=sys.stderr, flush=True)
    from tqdm import tqdm

    with tqdm(total=3 if int8 else 2, desc=backend, unit="step", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty(), bar_format="{desc}: {n}/{total} steps, {elapsed}") as bar:
        started: list[str] = []

        def stage(what: str) -> None:
            if started:  # the step before is done
                bar.update(1)
            started.append(what)
            bar.set_description_str(f"{backend}: {what}")

        yield stage


def onnx_predictor(model: nn.Module, int8: bool = False, calibration: str | None = None,
                   threads: int | None = None, outputs: ExportOutputs = ExportOutputs()) -> OnnxPredictor:
    """Export ``model`` to a cached ONNX file (keyed by weights and config) and wrap it."""
    return OnnxPredictor(_cached_export(model, "onnx", int8, calibration, outputs=outputs), model.config, threads)


class OpenVinoPredictor(nn.Module):
    """Runs OpenVINO IR (fp32 or int8 weights) on the CPU, in fp32 or bf16 arithmetic, behind the model's own
    interface (config + forward)."""

    def __init__(self, xml_path: str, config, precision: str = "fp32", threads: int | None = None) -> None:
        super().__init__()
        self.config = config
        if computed_precision(precision) != precision:  # a choice by this CPU's features (effnet.deploy.choice)
            print(f"effnet: note: {Path(xml_path).name}: {NO_NATIVE_BF16}", file=sys.stderr)
        self.runner = Runner(xml_path, precision, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner(x))


def openvino_predictor(model: nn.Module, int8: bool = False, calibration: str | None = None,
                       precision: str = "fp32", threads: int | None = None,
                       outputs: ExportOutputs = ExportOutputs()) -> OpenVinoPredictor:
    """Export ``model`` to cached OpenVINO IR (keyed by weights, config and int8 calibration) and wrap it."""
    return OpenVinoPredictor(_cached_export(model, "openvino", int8, calibration, outputs=outputs), model.config,
                             precision, threads)


class ExecuTorchPredictor(nn.Module):
    """Runs an ExecuTorch ``.pte`` (XNNPACK, fp32 or int8) behind the model's own interface (config + forward)."""

    def __init__(self, path: str, config) -> None:
        super().__init__()
        self.config = config
        self.runner = PteRunner(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner(x))


def executorch_predictor(model: nn.Module, int8: bool = False, calibration: str | None = None,
                         outputs: ExportOutputs = ExportOutputs()) -> ExecuTorchPredictor:
    """Export ``model`` to a cached ``.pte`` (batch 1; keyed by weights, config and int8 calibration) and wrap it."""
    return ExecuTorchPredictor(_cached_export(model, "executorch", int8, calibration, batch="static",
                                              outputs=outputs), model.config)


class ExportedFile(nn.Module):
    """An exported file (``.onnx``, OpenVINO ``.xml``, ExecuTorch ``.pte``) as a model: the config written beside
    it (:mod:`effnet.deploy.exported`) and ``forward`` on the engine its format names -- what
    :func:`effnet.load_model` returns for such a file. :meth:`engine` opens one more engine (``effnet serve``: one per
    inference thread). A detector's end-to-end or raw graph runs through :class:`effnet.detect.Predictor`."""

    def __init__(self, path: str | os.PathLike, config, info: ExportInfo) -> None:
        super().__init__()
        self.path, self.config, self.info = str(path), config, info
        self._default: nn.Module | None = None

    def backends(self) -> tuple[str, ...]:
        """The ``--backend`` values this file runs on: ``auto``, its own, the family's plain name for an int8 file,
        and bf16 arithmetic for OpenVINO IR."""
        own = self.info.backend
        extra = ("openvino-bf16",) if self.info.format == "openvino" else ()
        return tuple(dict.fromkeys(("auto", own, self.info.format, *extra)))

    def check_backend(self, backend: str) -> None:
        if backend not in self.backends():
            raise UsageError(
                f"{self.path} is an exported {self.info.describe()} file: it runs on --backend "
                f"{' or '.join(self.backends())}, not {backend} (for another engine export again, or give the model "
                "itself: a run folder or .safetensors)")

    def engine(self, backend: str = "auto", threads: int | None = None) -> nn.Module:
        """A new engine running this file (``backend``: one of :meth:`backends`)."""
        self.check_backend(backend)
        if self.info.graph != "model":
            raise UsageError(f"{self.path}: a detector's {self.info.graph.replace('_', '-')} graph runs through "
                             "effnet.detect.Predictor (effnet detect predict)")
        if self.info.format == "onnx":
            return OnnxPredictor(self.path, self.config, threads)
        if self.info.format == "openvino":
            return OpenVinoPredictor(self.path, self.config, "bf16" if backend == "openvino-bf16" else "fp32",
                                     threads)
        return ExecuTorchPredictor(self.path, self.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._default is None:
            self._default = self.engine()
        return self._default(x)


def load_exported(path: str | os.PathLike, make_config: Callable[[dict, str], Any]) -> ExportedFile:
    """The exported file at ``path`` with the config beside it (``PATH.json``; ``make_config(dict, source)`` turns
    it into its config type: the resolver's), ready to run; one line naming what is missing (the file, the .bin of
    OpenVINO IR, the config) or what does not match."""
    data, info = read_sidecar(path)
    here = int8_scheme()
    if info.int8_scheme not in (None, here.name):  # it runs; say what it was made for
        print(f"effnet: note: {path} was quantized with the {info.int8_scheme} int8 scheme for "
              f"{info.made_on.get('cpu', 'another CPU')}; this CPU's is {here.name} ({here.reason}): export again "
              "here for its own", file=sys.stderr)
    return ExportedFile(path, make_config(data, f"{path}.json"), info).eval()


def backend_for(model: nn.Module, backend: str | None, default: str = "torch") -> str:
    """The backend a command runs ``model`` on: the one given, else an exported file's own engine, else
    ``default`` (what the command runs a model on)."""
    if backend is not None:
        return backend
    return model.info.backend if isinstance(model, ExportedFile) else default


def at_resolution(model: nn.Module, resolution: int | None) -> nn.Module:
    """``model`` set to run at ``resolution`` (its config's input size; an export is made at it). An exported file
    was made at one size: another is one line."""
    if resolution and resolution != model.config.resolution:
        if isinstance(model, ExportedFile):
            raise UsageError(f"{model.path} was exported at {model.config.resolution} px; --resolution {resolution} "
                             "needs the model itself (a run folder or .safetensors), or export again at that size")
        model.config = model.config.replace(resolution=resolution)
    return model


def _link_images(images, folder: str) -> None:
    """Links in ``folder`` to the readable ``images``, for int8 calibration."""
    for i, path in enumerate(p for p in images if check_image(p) is None):
        os.symlink(os.path.abspath(path), os.path.join(folder, f"{i:05d}{Path(path).suffix}"))


def with_backend(model: nn.Module, backend: str, calibration: str | None = None, images: list[str] = (),
                 threads: int | None = None, outputs: ExportOutputs = ExportOutputs()) -> nn.Module:
    """``model`` behind a CPU inference backend: ``torch`` (optimize), ``onnx`` / ``onnx-int8`` (ONNX Runtime),
    ``openvino`` / ``openvino-bf16`` / ``openvino-int8`` (OpenVINO; bf16 arithmetic where the CPU has it, int8 by
    NNCF), ``executorch`` / ``executorch-int8`` (ExecuTorch + XNNPACK at batch 1, int8 by PT2E), or ``auto`` (the fastest fp32 backend installed). ``-int8`` calibrates on ``calibration``, else on
    ``images``. ``threads``: the ONNX Runtime / OpenVINO engine's thread count (default: every core; torch's
    is per calling thread, ``torch.set_num_threads``). ``outputs``: the task's output, as its export is
    verified (:class:`~effnet.deploy.export.ExportOutputs`)."""
    if isinstance(model, ExportedFile):  # the file decides the engine: a backend must be one it runs on
        return model.engine(backend, threads)
    if backend == "auto":
        backend = auto_backend(threads)
    if backend == "torch":
        return optimize(model)
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r} (auto, {', '.join(BACKENDS)})")
    int8 = backend.endswith("-int8")
    if int8 and calibration is None:  # calibrate on ``images``, linked from a folder that lives for the export
        with tempfile.TemporaryDirectory(prefix="effnet-calib-") as folder:
            _link_images(images, folder)
            return _predictor(model, backend, folder, threads, outputs)
    return _predictor(model, backend, calibration, threads, outputs)


def _predictor(model: nn.Module, backend: str, calibration: str | None, threads: int | None,
               outputs: ExportOutputs) -> nn.Module:
    """The exported (cached) model for an ONNX Runtime / OpenVINO / ExecuTorch ``backend``."""
    int8 = backend.endswith("-int8")
    if backend.startswith("executorch"):
        return executorch_predictor(model, int8=int8, calibration=calibration, outputs=outputs)
    if backend.startswith("openvino"):
        return openvino_predictor(model, int8=int8, calibration=calibration,
                                  precision="bf16" if backend == "openvino-bf16" else "fp32", threads=threads,
                                  outputs=outputs)
    return onnx_predictor(model, int8=int8, calibration=calibration, threads=threads, outputs=outputs)
