"""ExecuTorch (PyTorch's on-device runtime) with the XNNPACK backend: ``.pte`` files for phones and small boards, which
also run on x86 CPUs. ``torch.export`` → XNNPACK partitioner → ``.pte``; int8 through the PT2E flow with XNNPACK's
quantizer (per-channel symmetric weights, calibrated on real images). The graph is exported at batch 1, the edge
case it is for; :class:`PteRunner` runs larger batches image by image."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from ..extras import install_hint


def require_executorch():
    try:
        from executorch.runtime import Runtime
    except ImportError:
        raise UsageError(f"--format/--backend executorch {install_hint('executorch')}") from None
    return Runtime


def lower(deploy_model: nn.Module, example: torch.Tensor, calibration: torch.Tensor | None = None) -> bytes:
    """The ``.pte`` program of ``deploy_model`` for inputs shaped like ``example`` (batch 1); with ``calibration``
    (real images, N x C x H x W), int8: PT2E quantization calibrated on them before lowering."""
    require_executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        program = torch.export.export(deploy_model, (example,))
        if calibration is not None:
            program = torch.export.export(_quantized(program.module(), example, calibration), (example,))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    return lowered.to_executorch().buffer


def _quantized(module: nn.Module, example: torch.Tensor, calibration: torch.Tensor) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(module, quantizer)
    for x in calibration.split(1):  # the program's batch is 1
        prepared(x)
    return convert_pt2e(prepared)


class PteRunner:
    """A ``.pte`` file in ExecuTorch's runtime: ``runner(x)`` → outputs as numpy, image by image (batch-1 program)."""

    def __init__(self, path: str | os.PathLike) -> None:
        runtime = require_executorch().get()
        self.method = runtime.load_program(str(path)).load_method("forward")

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        x = x.float().contiguous()
        return np.concatenate([self.method.execute([row])[0].numpy() for row in x.split(1)]) if len(x) else \
            np.zeros((0,), np.float32)
