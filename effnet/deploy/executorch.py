"""ExecuTorch (PyTorch's on-device runtime) with the XNNPACK backend: ``.pte`` files for phones and small boards, which
also run on x86 CPUs. ``torch.export`` → XNNPACK partitioner → ``.pte``; int8 through the PT2E flow with XNNPACK's
quantizer (per-channel symmetric weights, calibrated on real images). The graph is exported at batch 1, the edge
case it is for; :class:`PteRunner` runs larger batches image by image."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from ..extras import install_hint


def require_executorch():
    # torchao (imported by ExecuTorch) registers an Enum with torch's pytree, which logs a deprecation warning to
    # every user of a .pte; it is the library's business, not the user's
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    try:
        from executorch.runtime import Runtime
    except ImportError:
        raise UsageError(f"--format/--backend executorch {install_hint('executorch')}") from None
    return Runtime


def lower(deploy_model: nn.Module, example: torch.Tensor, calibration: torch.Tensor | None = None,
          keep_float: tuple[str, ...] = ()) -> bytes:
    """The ``.pte`` program of ``deploy_model`` for inputs shaped like ``example`` (batch 1); with ``calibration``
    (real images, N x C x H x W), int8: PT2E quantization calibrated on them before lowering, except in the
    submodules named in ``keep_float`` (qualified names, as ``named_modules`` gives them)."""
    require_executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        if calibration is not None:
            deploy_model = _quantized(deploy_model, example, calibration, keep_float)
        program = torch.export.export(deploy_model, (example,))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    return lowered.to_executorch().buffer


# Calibration images per call of the observed graph, at 224 x 224 (fewer at larger sizes, as many pixels a call).
# HistogramObserver's work is per call: one image at a time, Lite0 on 256 digits at 64 px calibrated in 8.2 s, 32
# at a time in 1.9 s; the quantized graph's top-1 agreed with fp32's on 99.7% of 360 held-out digits both ways.
CALIBRATION_PIXELS = 32 * 224 * 224


def calibration_graph(model: nn.Module, example: torch.Tensor, images: int) -> tuple[nn.Module, int]:
    """The graph PT2E observes for ``images`` calibration images, and how many it takes a call (at least): exported
    with a free batch dimension, so that calibration runs in chunks. Never one image through that graph: torch.export
    assumes a free dimension is 2 or more, and a branch on it would take the wrong side. A model whose graph fixes
    its batch, or a single image, goes one image a call."""
    height, width = example.shape[-2:]
    chunk = max(1, CALIBRATION_PIXELS // (height * width))
    if chunk > 1 and images > 1:
        try:
            batch = torch.export.Dim("batch", min=1)
            two = example.expand(2, *example.shape[1:]).contiguous()
            return torch.export.export(model, (two,), dynamic_shapes=({0: batch},)).module(), min(chunk, images)
        except Exception as error:  # noqa: BLE001 -- torch.export's refusals have no public common type
            logging.getLogger(__name__).debug("calibrating one image a call: %s", error)
    return torch.export.export(model, (example,)).module(), 1


def _quantized(model: nn.Module, example: torch.Tensor, calibration: torch.Tensor,
               keep_float: tuple[str, ...] = ()) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer

    config = get_symmetric_quantization_config(is_per_channel=True)
    quantizer = ComposableQuantizer([_float_quantizer(keep_float), _conv_relu6_quantizer(config),
                                     XNNPACKQuantizer().set_global(config)])
    graph, chunk = calibration_graph(model, example, len(calibration))
    prepared = prepare_pt2e(graph, quantizer)
    for x in calibration.tensor_split(len(calibration) // chunk):  # chunk to 2 x chunk - 1 images: none alone
        prepared(x)
    return convert_pt2e(prepared)  # exported again by the caller, at the program's batch of 1


def _float_quantizer(names: tuple[str, ...]):
    """Marks every op inside the submodules ``names`` as done, so the quantizers after it leave them in float.
    (XNNPACK's quantizer has ``set_module_name`` but refuses ``None`` as its config.)"""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, Quantizer
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    class KeepFloat(Quantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for node in model.graph.nodes:
                stack = node.meta.get("nn_module_stack") or {}
                if node.op == "call_function" and any(path in names for path, _ in stack.values()):
                    node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(_annotated=True)
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            pass

    return KeepFloat()


RELU6 = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)  # nn.ReLU6 once exported
CONV = (torch.ops.aten.conv2d.default,)


def _conv_relu6_quantizer(config):
    """Conv → ReLU6 quantized as one op, observed after the clamp, as TFLite's fused kernels are.

    XNNPACK's quantizer fuses conv + ReLU only: after a conv that ReLU6 follows it places the observer on the conv's
    output and lets the clamp share it, so the int8 steps span the pre-activation range (wider after BatchNorm
    folding) where only [0, 6] survives, and what the next layer sees gets only part of the 256 levels.
    EfficientNet-Lite puts ReLU6 after 33 of its 49 convs (Lite0). Observing the clamp's output instead gives all
    256 levels to [0, 6]; XNNPACK then runs the clamp inside the conv (output min/max). Measured on a Lite0
    fine-tuned on digits (``effnet eval --backend executorch-int8``, fp32 99.4%): 92.2% with XNNPACK's patterns
    alone, 99.2% with this one."""
    from torchao.quantization.pt2e.quantizer import (
        QuantizationAnnotation,
        Quantizer,
        get_bias_qspec,
        get_input_act_qspec,
        get_output_act_qspec,
        get_weight_qspec,
    )
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    class ConvReLU6(Quantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for relu6 in model.graph.nodes:
                conv = relu6.args[0] if relu6.op == "call_function" and relu6.target in RELU6 else None
                if conv is None or conv.target not in CONV or len(conv.users) > 1:
                    continue
                qspecs = {conv.args[0]: get_input_act_qspec(config), conv.args[1]: get_weight_qspec(config)}
                if len(conv.args) > 2 and conv.args[2] is not None:
                    qspecs[conv.args[2]] = get_bias_qspec(config)
                conv.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(qspecs, _annotated=True)
                relu6.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(
                    output_qspec=get_output_act_qspec(config), _annotated=True)
                for weight in list(qspecs)[1:]:  # XNNPACK's own conv pattern skips what is annotated
                    weight.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(_annotated=True)
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            pass

    return ConvReLU6()


class PteRunner:
    """A ``.pte`` file in ExecuTorch's runtime: ``runner(x)`` → outputs as numpy, image by image (batch-1 program).

    The runtime reads an input tensor's memory as dense row-major float32 whatever its strides say, so a strided
    or channels-last view (what ``ToImage`` + resize give before :class:`effnet.data.images.Contiguous`) runs as
    scrambled pixels, without an error: the batch is handed over as a C-contiguous float32 copy (none is made for
    a tensor that already is one)."""

    def __init__(self, path: str | os.PathLike) -> None:
        runtime = require_executorch().get()
        self.method = runtime.load_program(str(path)).load_method("forward")

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return self.outputs(x)[0] if len(x) else np.zeros((0,), np.float32)

    def outputs(self, x: torch.Tensor) -> list[np.ndarray]:
        """Every output of the program (a detector's ten raw levels), each concatenated over the batch."""
        x = x.detach().to("cpu", torch.float32).contiguous()  # as the runtime reads it (the class docstring)
        rows = [[t.numpy() for t in self.method.execute([row])] for row in x.split(1)]
        return [np.concatenate(per_output) for per_output in zip(*rows)]
