"""Exported models behind the model's own interface (``config`` + ``forward``), for ``predict --backend``."""

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
from .export import export_model
from .optimize import optimize
from .ort import ort_run, ort_session


class OnnxPredictor(nn.Module):
    """Runs an exported ONNX file with ONNX Runtime behind the model's own interface (config + forward)."""

    def __init__(self, path: str, config) -> None:
        super().__init__()
        self.config = config
        self.session = ort_session(path)
        self.dynamic = not isinstance(self.session.get_inputs()[0].shape[0], int)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(ort_run(self.session, x.float().contiguous(), self.dynamic))


def onnx_predictor(model: nn.Module, int8: bool = False, calibration: str | None = None) -> OnnxPredictor:
    """Export ``model`` to a cached ONNX file (keyed by weights and config) and wrap it."""
    h = hashlib.sha256(model.config.to_json().encode())
    for v in model.state_dict().values():
        h.update(v.detach().cpu().numpy().tobytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "effnet" / "onnx"
    cache.mkdir(parents=True, exist_ok=True)
    suffix = "int8" if int8 else "fp32"
    path = cache / f"{model.config.name}-{h.hexdigest()[:16]}-{suffix}.onnx"
    if not path.exists():
        export_model(model, path, "onnx", batch="dynamic", int8=int8, calibration=calibration, log=lambda *a: None)
    return OnnxPredictor(str(path), model.config)


def with_backend(model: nn.Module, backend: str, calibration: str | None = None, images: list[str] = ()) -> nn.Module:
    """``model`` behind a CPU inference backend: ``torch`` (optimize), ``onnx`` / ``onnx-int8`` (ONNX Runtime),
    or ``auto`` (ONNX Runtime when installed). ``onnx-int8`` calibrates on ``calibration``, else on ``images``."""
    if backend == "auto":
        backend = "onnx" if importlib.util.find_spec("onnxruntime") else "torch"
    if backend == "torch":
        return optimize(model)
    if backend not in ("onnx", "onnx-int8"):
        raise UsageError(f"unknown backend {backend!r} (auto, torch, onnx, onnx-int8)")
    if backend == "onnx-int8" and calibration is None:
        calibration = tempfile.mkdtemp(prefix="effnet-calib-")
        for i, path in enumerate(p for p in images if check_image(p) is None):
            os.symlink(os.path.abspath(path), os.path.join(calibration, f"{i:05d}{Path(path).suffix}"))
    return onnx_predictor(model, int8=backend == "onnx-int8", calibration=calibration)
