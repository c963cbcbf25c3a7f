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

from ..cpu import Int8Scheme, int8_scheme, physical_cores
from ..errors import ExportError
from ..extras import install_hint
from .choice import CHUNK, computed_precision

# OpenVINO's CPU plugin runs in bf16 by default on CPUs that have it (AVX512-BF16 / AMX): "fp32" must be
# asked for explicitly, or an "fp32" model silently computes in bf16 (logits off by ~0.1).
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def require_openvino():
    try:
        import openvino
    except ImportError:
        raise ExportError(f"OpenVINO export and backends {install_hint('openvino')}") from None
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
    core = require_openvino().Core()
    return core.compile_model(core.read_model(str(model)) if isinstance(model, (str, os.PathLike)) else model, "CPU",
                              cpu_config(precision, threads))


def cpu_config(precision: str, threads: int | None, streams: int | None = None) -> dict:
    """The CPU plugin's settings: the precision hint (fp32 must be asked for), the thread count, and either one
    latency stream or ``streams`` throughput streams."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown OpenVINO precision {precision!r} ({', '.join(PRECISIONS)})")
    config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if streams:
        config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=streams)
    return config


def _dense(x: torch.Tensor) -> np.ndarray:
    """``x`` as the array handed to OpenVINO: C-contiguous float32 whatever its layout or float dtype (no copy when
    it already is one). OpenVINO copies a strided array itself today; that is not left to it (ExecuTorch does
    not, :class:`effnet.deploy.executorch.PteRunner`)."""
    return x.detach().to("cpu", torch.float32).contiguous().numpy()


def ov_run(compiled, x: torch.Tensor) -> np.ndarray:
    """Run a batch (any layout or float dtype: :func:`_dense`); a model with a fixed batch of 1 runs the images
    one by one."""
    x = _dense(x)
    fixed = compiled.input(0).get_partial_shape()[0]
    if fixed.is_static and fixed.get_length() != x.shape[0]:
        return np.concatenate([compiled(x[i:i + 1])[0] for i in range(x.shape[0])])
    return compiled(x)[0]


class Runner:
    """Runs an IR on the CPU the fast way for its batch size: static shapes, and small chunks across streams.

    Measured (B0 224 px, 2 cores, fp32, one interleaved run, x ONNX Runtime on a timm export): a model compiled
    for a dynamic batch runs 1.11x at batch 1 and 0.94x at batch 16; compiled for the exact static shape 1.22x
    and 0.97x; batch 16 cut into chunks of 2 that run on one stream per core (one thread each) 1.20x -- a
    B0 activation at batch 2 stays in a core's cache, and the two cores never wait for each other inside a
    layer. So batch 1 gets a latency-compiled static model and larger batches the chunked one; the chunk size
    per precision, the thread count and whether bf16 is native are this CPU's choices
    (:mod:`effnet.deploy.choice`). Hand-written: OpenVINO compiles one shape per model and leaves the splitting
    of a batch across streams to the caller (``AsyncInferQueue`` does the scheduling). An IR exported for a
    fixed batch runs as exported, image by image.
    """

    def __init__(self, model, precision: str = "fp32", threads: int | None = None, chunk: int | None = None) -> None:
        cpu_config(precision, threads)  # refuses an unknown precision now, not at the first call
        self.core = require_openvino().Core()
        self.model = self.core.read_model(str(model)) if isinstance(model, (str, os.PathLike)) else model
        self.fixed_batch = self.model.input(0).get_partial_shape()[0].is_static
        # by this CPU's features (effnet.deploy.choice): bf16 where native, one thread per physical core
        self.precision, self.threads = computed_precision(precision), threads or physical_cores()
        int8 = any(op.get_type_name() == "FakeQuantize" for op in self.model.get_ops())
        self.chunk = chunk or CHUNK["int8" if int8 else self.precision]
        self._compiled: dict[tuple[int, bool], object] = {}
        self._queues: dict[int, object] = {}

    def compiled(self, batch: int | None, streamed: bool = False):
        """The model compiled for a static ``batch`` (None: the IR's own shape): one latency stream, or one
        stream per thread."""
        key = (batch, streamed)
        if key not in self._compiled:
            model = self.model.clone()
            if batch is not None:
                shape = model.input(0).get_partial_shape()
                shape[0] = batch
                model.reshape({model.input(0): shape})
            config = cpu_config(self.precision, self.threads, self.threads if streamed else None)
            self._compiled[key] = self.core.compile_model(model, "CPU", config)
        return self._compiled[key]

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        if x.shape[0] == 0:
            raise ValueError("an empty batch")
        if self.fixed_batch:
            return ov_run(self.compiled(None), x)
        x = _dense(x)
        chunks = -(-x.shape[0] // self.chunk)
        if chunks < max(self.threads, 2):  # fewer chunks than streams (or one stream): one call, all threads
            return self.compiled(x.shape[0])(x)[0]
        out: list = [None] * chunks
        try:
            used = []
            for i, start in enumerate(range(0, x.shape[0], self.chunk)):
                part = x[start:start + self.chunk]
                queue = self._queue(part.shape[0])
                queue.start_async({0: part}, (out, i))
                used.append(queue)
            for queue in set(used):
                queue.wait_all()
        except Exception:
            self._queues.clear()  # a queue keeps a failed request's error: start afresh next call
            raise
        return np.concatenate(out)

    def _queue(self, batch: int):
        if batch not in self._queues:
            queue = require_openvino().AsyncInferQueue(self.compiled(batch, streamed=True), self.threads)

            def done(request, slot) -> None:
                results, i = slot
                results[i] = request.get_output_tensor(0).data.copy()

            queue.set_callback(done)
            self._queues[batch] = queue
        return self._queues[batch]


def quantize_int8(ov_model, batch: torch.Tensor | list[dict], ignored_types: tuple[str, ...] = (),
                  scheme: Int8Scheme | None = None):
    """NNCF post-training quantization (int8 weights and activations, the CNN defaults: symmetric, per-channel
    weights, fast bias correction) calibrated on ``batch`` (N, C, H, W) of preprocessed real images, or on a list of
    input dicts (input name -> array) for a model with several inputs (the end-to-end detector).

    ``ignored_types`` keeps those OpenVINO op types (e.g. ``("MatMul",)`` for the classifier) in float.
    ``scheme`` (default: the one for the CPU this runs on, :func:`effnet.cpu.int8_scheme`): 7-bit weights in every
    layer without VNNI/AMX, NNCF's full 8-bit weights with them.
    """
    require_openvino()
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    nncf.set_log_level(logging.ERROR)  # per-node INFO lines and progress bars: not a user's business
    items = batch if isinstance(batch, list) else [_dense(batch[i:i + 1]) for i in range(batch.shape[0])]
    scope = nncf.IgnoredScope(types=list(ignored_types), validate=False) if ignored_types else None
    kwargs = {"ignored_scope": scope} if scope else {}
    # 7-bit weights in every layer where the CPU lacks VNNI: there OpenVINO's int8 convolutions add pairs of
    # u8 x s8 products into saturating 16-bit sums. Measured on such a CPU (AVX2 only; pretrained Lite0, 48 photo
    # views): top-1 agreement with fp32 where fp32 is confident 0.74 with NNCF's default (the first layer only),
    # 1.0 with this (23 photos; 0.77 overall). With VNNI/AMX nothing saturates: full 8-bit weights everywhere.
    fix = OverflowFix.ENABLE if (scheme or int8_scheme()).openvino_seven_bit else OverflowFix.DISABLE
    kwargs["advanced_parameters"] = AdvancedQuantizationParameters(overflow_fix=fix)
    # NNCF draws rich progress bars on the console whatever its log level: keep them off a CLI's output
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(ov_model, nncf.Dataset(items), subset_size=len(items), **kwargs)
