"""OpenVINO: convert an inference copy to OpenVINO IR (.xml + .bin), compile it for the CPU in fp32 or bf16,
and NNCF post-training int8 quantization."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError

# OpenVINO's CPU plugin runs in bf16 by default on CPUs that have it (AVX512-BF16 / AMX): "fp32" must be
# asked for explicitly, or an "fp32" model silently computes in bf16 (logits off by ~0.1).
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def require_openvino():
    try:
        import openvino
    except ImportError:
        raise ExportError("OpenVINO is not installed: pip install 'effnet[openvino]'") from None
    return openvino


def cpu_has_bf16() -> bool:
    """Whether the CPU plugin reports native bf16 (AVX512-BF16 or AMX); otherwise bf16 would be emulated."""
    ov = require_openvino()
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def convert(deploy_model: nn.Module, example: torch.Tensor, dynamic_batch: bool = True):
    """``ov.Model`` from a PyTorch inference copy (traced on ``example``); the batch axis dynamic or fixed."""
    ov = require_openvino()
    shape = [-1 if dynamic_batch else example.shape[0], *example.shape[1:]]
    with torch.no_grad():
        return ov.convert_model(deploy_model, example_input=example, input=[shape])


def save_ir(ov_model, xml_path: str | os.PathLike) -> None:
    """Write ``xml_path`` and its ``.bin`` (weights kept in fp32: no fp16 compression, parity stays tight)."""
    require_openvino().save_model(ov_model, str(xml_path), compress_to_fp16=False)


def bin_path(xml_path: str | os.PathLike) -> Path:
    return Path(xml_path).with_suffix(".bin")


def compile_ir(model, precision: str = "fp32", threads: int | None = None):
    """A compiled CPU model from an ``ov.Model`` or an .xml path; ``precision`` fp32 or bf16 (inference hint).

    One stream with the latency hint: every call uses all ``threads`` for one batch, as the other engines do.
    """
    ov = require_openvino()
    if precision not in PRECISIONS:
        raise ExportError(f"unknown OpenVINO precision {precision!r} ({', '.join(PRECISIONS)})")
    config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    return core.compile_model(core.read_model(str(model)) if isinstance(model, (str, os.PathLike)) else model, "CPU",
                              config)


def ov_run(compiled, x: torch.Tensor) -> np.ndarray:
    """Run a batch; a model with a fixed batch of 1 runs the images one by one."""
    x = x.float().contiguous()
    fixed = compiled.input(0).get_partial_shape()[0]
    if fixed.is_static and fixed.get_length() != x.shape[0]:
        return np.concatenate([compiled(x[i:i + 1].numpy())[0] for i in range(x.shape[0])])
    return compiled(x.numpy())[0]


def quantize_int8(ov_model, batch: torch.Tensor, ignored_types: tuple[str, ...] = ()):
    """NNCF post-training quantization (int8 weights and activations, the CNN defaults: symmetric, per-channel
    weights, fast bias correction) calibrated on ``batch`` (N, C, H, W) of preprocessed real images.

    ``ignored_types`` keeps those OpenVINO op types (e.g. ``("MatMul",)`` for the classifier) in float.
    """
    require_openvino()
    import nncf

    nncf.set_log_level(logging.ERROR)  # per-node INFO lines and progress bars: not a user's business
    data = nncf.Dataset([batch[i:i + 1].numpy() for i in range(batch.shape[0])])
    scope = nncf.IgnoredScope(types=list(ignored_types), validate=False) if ignored_types else None
    kwargs = {"ignored_scope": scope} if scope else {}
    # NNCF draws rich progress bars on the console whatever its log level: keep them off a CLI's output
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(ov_model, data, subset_size=batch.shape[0], **kwargs)
