"""Deployment: inference copies (``optimize``), verified ONNX / OpenVINO IR / TorchScript / ExecuTorch export, int8
with ONNX Runtime, NNCF or PT2E, and exported models as predictors.

The names below are imported on first use (PEP 562, :mod:`effnet.lazy`): a light submodule -- ``choice``,
``exported`` (what ``create_model`` asks of a path) -- loads without the exporters and torchvision, which only a
program that exports or runs an export imports (17 MiB and ~0.35 s in a process that has built a model; more in one
that has not yet loaded ``torch._dynamo``, which torchvision imports).
"""

from __future__ import annotations

from ..lazy import lazy_exports
# imported now, not lazily: the function ``optimize`` shares its name with its module, which would otherwise take the
# package attribute the first time any module imports ``.optimize`` (torch and effnet's own layers only: light)
from .optimize import compile_for_inference, fold_batchnorm, freeze_same_padding, optimize, to_plain_ops

_EXPORTS = {
    **{name: (".choice", name) for name in ("EngineChoice", "auto_backend", "choose")},
    **{name: (".export", name) for name in ("FORMATS", "ExportReport", "export_model")},
    **{name: (".ort", name) for name in ("ort_run", "ort_session", "quantize_int8")},
    **{name: (".predictors", name) for name in ("BACKENDS", "ExecuTorchPredictor", "OnnxPredictor",
                                                 "OpenVinoPredictor", "executorch_predictor", "onnx_predictor",
                                                 "openvino_predictor", "with_backend")},
}

__all__ = ["compile_for_inference", "fold_batchnorm", "freeze_same_padding", "optimize", "to_plain_ops", *_EXPORTS]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
