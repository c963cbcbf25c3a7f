"""Exported models behind the model's own interface (``config`` + ``forward``), for ``predict --backend`` and
``eval --backend``."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..data import check_image
from ..errors import UsageError
from ..files import cache_root
from .executorch import PteRunner
from .export import EXTENSIONS, ExportOutputs, export_model
from .optimize import optimize
from .openvino import Runner
from .ort import ort_run, ort_session

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8", "executorch",
            "executorch-int8")


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
    path = cache_path(model, fmt, "int8" if int8 else "fp32", calibration if int8 else None, EXTENSIONS[fmt])
    if not path.exists():
        export_model(model, path, fmt, batch=batch, int8=int8, calibration=calibration, outputs=outputs)
    return str(path)


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


def auto_backend(threads: int | None = None) -> str:
    """The fastest installed backend that keeps fp32 results (bf16 and int8 change logits, so they are opt-in).

    Measured (benchmarks/results/bench_infer_ort_ov.json, B0 224 px, 2 threads, one interleaved run, x ONNX
    Runtime on a timm export, batch 1 / 16): OpenVINO fp32 through :class:`~effnet.deploy.openvino.Runner`
    1.23x / 1.20x, ONNX Runtime fp32 0.95x / 1.01x -- so OpenVINO first when an engine has the cores to itself.
    With a fixed ``threads`` per engine (``effnet serve``: one engine per core, sharing them) ONNX Runtime
    served more (Lite0: 136 vs 107 requests/s, benchmarks/bench_serve.py), so there ONNX Runtime comes first.
    """
    order = (("openvino", "openvino"), ("onnx", "onnxruntime"))
    for backend, module in order if threads is None else order[::-1]:
        if importlib.util.find_spec(module):
            return backend
    return "torch"


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
