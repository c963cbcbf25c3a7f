"""Deployment: inference copies (``optimize``), verified ONNX / OpenVINO IR / TorchScript / ExecuTorch export, int8
with ONNX Runtime, NNCF or PT2E, and exported models as predictors."""

from .choice import EngineChoice, auto_backend, choose
from .export import FORMATS, ExportReport, export_model
from .optimize import compile_for_inference, fold_batchnorm, freeze_same_padding, optimize, to_plain_ops
from .ort import ort_run, ort_session, quantize_int8
from .predictors import (BACKENDS, ExecuTorchPredictor, OnnxPredictor, OpenVinoPredictor,
                         executorch_predictor, onnx_predictor, openvino_predictor, with_backend)

__all__ = ["FORMATS", "ExportReport", "export_model", "compile_for_inference", "fold_batchnorm", "freeze_same_padding",
           "optimize", "to_plain_ops", "ort_run", "ort_session", "quantize_int8", "OnnxPredictor", "onnx_predictor",
           "with_backend", "BACKENDS", "OpenVinoPredictor", "auto_backend", "openvino_predictor",
           "ExecuTorchPredictor", "executorch_predictor", "EngineChoice", "choose"]
