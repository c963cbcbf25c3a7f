"""Deployment: inference copies (``optimize``), verified ONNX / TorchScript export, int8 with ONNX Runtime,
and exported models as predictors."""

from .export import ExportReport, export_model
from .optimize import compile_for_inference, fold_batchnorm, freeze_same_padding, optimize, to_plain_ops
from .ort import ort_run, ort_session, quantize_int8
from .predictors import OnnxPredictor, onnx_predictor, with_backend

__all__ = ["ExportReport", "export_model", "compile_for_inference", "fold_batchnorm", "freeze_same_padding",
           "optimize", "to_plain_ops", "ort_run", "ort_session", "quantize_int8", "OnnxPredictor", "onnx_predictor",
           "with_backend"]
