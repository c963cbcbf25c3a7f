"""ONNX Runtime: sessions (never spinning when engines share cores), batched runs, static int8 quantization."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from ..cpu import Int8Scheme, int8_scheme
from ..files import atomic_write


def ort_session(path: str, threads: int | None = None, spinning: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:  # do not busy-wait between calls (fair when other engines share the cores)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _dense(x: torch.Tensor) -> np.ndarray:
    """``x`` as the array handed to ONNX Runtime: C-contiguous float32 whatever its layout or float dtype (no copy
    when it already is one). ONNX Runtime copies a strided array itself today and refuses float64; neither is left
    to it (ExecuTorch reads strided memory as dense, :class:`effnet.deploy.executorch.PteRunner`)."""
    return x.detach().to("cpu", torch.float32).contiguous().numpy()


def ort_run(session, x: torch.Tensor, batch_dynamic: bool) -> np.ndarray:
    """The session's first output for the batch ``x`` (any layout: :func:`_dense`), image by image where the
    graph's batch is fixed."""
    name = session.get_inputs()[0].name
    x = _dense(x)
    if batch_dynamic or x.shape[0] == 1:
        return session.run(None, {name: x})[0]
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(x.shape[0])])


def quantize_int8(fp32_path: str, out_path: str, batch: torch.Tensor, scheme: Int8Scheme | None = None) -> None:
    """ONNX Runtime static quantization: QDQ, per-channel weights, uint8 activations, calibrated on ``batch``
    (N, C, H, W) of preprocessed real images. ``scheme`` (default: the one for the CPU this runs on,
    :func:`effnet.cpu.int8_scheme`) decides the weights: int8 (U8S8, ONNX Runtime's default and its fast path) with
    VNNI or AMX, uint8 (U8U8) without, where U8S8's 16-bit sums saturate (top-1 agreement with fp32 where fp32 is
    confident, pretrained Lite0, AVX2-only CPU: U8S8 0.70, U8S8 with 7-bit weights 0.87, U8U8 0.96). The file runs
    anywhere; the scheme is recorded in its config (``effnet.deploy.exported.ExportInfo``)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": _dense(batch[i:i + 1])} for i in range(batch.shape[0])])

        def get_next(self):
            return next(self.items, None)

    import onnx

    scheme = scheme or int8_scheme()
    weights = QuantType.QInt8 if scheme.onnx_signed_weights else QuantType.QUInt8
    with tempfile.TemporaryDirectory() as tmp:
        prep = os.path.join(tmp, "prep.onnx")
        quant_pre_process(fp32_path, prep, skip_symbolic_shape=True)
        graph = onnx.load(prep).graph
        convs = [n.name for n in graph.node if n.op_type == "Conv"]
        # the stem sees raw pixels and the classifier sets the ranking: both stay fp32 (cheap, and it
        # measurably raised top-1 agreement with fp32)
        exclude = convs[:1] + [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
        atomic_write(out_path, lambda t: quantize_static(prep, t, Reader(), quant_format=QuantFormat.QDQ,
                                                         per_channel=True, activation_type=QuantType.QUInt8,
                                                         weight_type=weights, nodes_to_exclude=exclude))
