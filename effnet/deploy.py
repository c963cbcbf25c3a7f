"""Deployment: fold BatchNorm, export to ONNX / TorchScript with parity checks, int8 with ONNX Runtime,
and the lean-training switches (memory-efficient activations, per-stage gradient checkpointing).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .layers import ConvBNAct, DropPath, MemoryEfficientSiLU, SamePad2d, SqueezeExcite

# ---------------------------------------------------------------------------------------------- lean training


def set_memory_efficient(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Swap SiLU and SE gating for custom-autograd versions that recompute instead of storing (or back)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if enabled and isinstance(child, nn.SiLU):
                setattr(module, name, MemoryEfficientSiLU())
            elif not enabled and isinstance(child, MemoryEfficientSiLU):
                setattr(module, name, nn.SiLU(inplace=True))
        if isinstance(module, SqueezeExcite):
            module.memory_efficient = enabled
    return model


def set_grad_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Recompute each stage's activations in backward instead of storing them (torch.utils.checkpoint)."""
    model.grad_checkpointing = enabled
    return model


def to_plain_ops(model: nn.Module) -> nn.Module:
    """Undo the lean-training switches: exports need ordinary ops (custom autograd functions do not export)."""
    set_memory_efficient(model, False)
    set_grad_checkpointing(model, False)
    return model


# ---------------------------------------------------------------------------------------------- optimize

def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every ConvBNAct's BatchNorm into its conv (eval mode statistics), in place."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in model.modules():
        if isinstance(module, ConvBNAct) and isinstance(getattr(module, "bn", None), nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    return model


def optimize(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """An inference copy: BatchNorm folded, dropout / stochastic depth removed, plain ops, channels_last.

    Logits equal the original model's (eval mode) within float rounding.
    """
    model = to_plain_ops(copy.deepcopy(model)).eval()
    fold_batchnorm(model)
    for module in model.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, (DropPath, nn.Dropout)):
                setattr(module, name, nn.Identity())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_for_inference(model: nn.Module, bf16: bool = False):
    """``optimize`` + ``torch.compile`` (Inductor, weights frozen as constants) for CPU inference.

    Returns a callable taking an NCHW float batch; the first call compiles (tens of seconds on 2 cores).
    With ``bf16`` it runs under bfloat16 autocast (AVX-512 BF16 / AMX where the CPU has them).
    """
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # fold weights into the graph: lets Inductor pre-pack conv weights
    fast = torch.compile(optimize(model))

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return fast(x.contiguous(memory_format=torch.channels_last)).float()

    return run


def freeze_same_padding(model: nn.Module, resolution: int) -> nn.Module:
    """Replace TF "SAME" pads, which depend on the input size, by constant pads for ``resolution`` x
    ``resolution`` inputs, so that exports contain a static Pad rather than a shape subgraph."""
    pads: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, SamePad2d):
            hooks.append(module.register_forward_pre_hook(
                lambda m, inp, name=name: pads.__setitem__(name, tuple(inp[0].shape[-2:]))))
    if not hooks:
        return model
    with torch.no_grad():
        model(torch.zeros(1, model.config.in_chans, resolution, resolution))
    for h in hooks:
        h.remove()
    for name, (h, w) in pads.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        same: SamePad2d = getattr(parent, attr)
        padded = same(torch.zeros(1, 1, h, w)).shape
        ph, pw = padded[-2] - h, padded[-1] - w
        setattr(parent, attr, nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))
    return model


# ---------------------------------------------------------------------------------------------- export

class ExportError(RuntimeError):
    pass


@dataclass
class ExportReport:
    path: str
    format: str
    max_abs_diff_random: float
    max_abs_diff_real: float | None
    real_images: int
    int8: bool = False
    top1_agreement: float | None = None  # int8 vs fp32 on real images
    top1_agreement_confident: float | None = None  # ... where fp32's top-1 beats its top-2 by > 0.1 prob
    confident_images: int = 0
    notes: list[str] = field(default_factory=list)


def _real_batch(config, images_dir: str | None, limit: int = 256) -> tuple[torch.Tensor | None, list[str]]:
    """Real images for parity checks: files from ``images_dir`` (recursively), else scikit-image's photos."""
    from .data import ImageLoadError, eval_transform, load_image

    tf = eval_transform(config)
    tensors, names = [], []
    if images_dir:
        files = sorted(p for p in Path(images_dir).rglob("*") if p.is_file())
        for p in files:
            try:
                tensors.append(tf(load_image(p)))
                names.append(str(p))
            except ImageLoadError:
                continue
            if len(tensors) >= limit:
                break
    else:
        try:
            import skimage.data
            from PIL import Image

            for n in ("chelsea", "coffee", "astronaut", "rocket", "cat"):
                if hasattr(skimage.data, n):
                    arr = np.asarray(getattr(skimage.data, n)())
                    img = Image.fromarray(arr).convert("RGB")
                    tensors.append(tf(img))
                    names.append(f"skimage.data.{n}")
        except ImportError:
            pass
    return (torch.stack(tensors) if tensors else None), names


def _ort_session(path: str, threads: int | None = None, spinning: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:  # do not busy-wait between calls (fair when other engines share the cores)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _ort_run(session, x: torch.Tensor, batch_dynamic: bool) -> np.ndarray:
    name = session.get_inputs()[0].name
    if batch_dynamic or x.shape[0] == 1:
        return session.run(None, {name: x.numpy()})[0]
    return np.concatenate([session.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(x.shape[0])])


def export_model(model: nn.Module, path: str | os.PathLike, fmt: str = "onnx", batch: str = "static",
                 resolution: int | None = None, int8: bool = False, calibration: str | None = None,
                 tolerance: float = 1e-3, opset: int = 17, log=print) -> ExportReport:
    """Export ``model`` (plain ops, eval, BN folded) and verify the file against PyTorch.

    Parity is checked on random inputs and on real images (``calibration`` folder, else scikit-image photos):
    the largest absolute logit difference must stay under ``tolerance`` or :class:`ExportError` is raised.
    With ``int8``, ONNX Runtime static quantization (QDQ, per-channel weights) calibrated on ``calibration``
    images; the report gives top-1 agreement with fp32 on those images.
    """
    config = model.config
    res = resolution or config.resolution
    ref = to_plain_ops(copy.deepcopy(model)).eval()
    deploy_model = optimize(ref, channels_last=False)
    freeze_same_padding(deploy_model, res)
    x_random = torch.randn(2 if batch == "dynamic" else 1, config.in_chans, res, res, generator=torch.Generator().manual_seed(0))
    real, real_names = _real_batch(config.replace(resolution=res), calibration)
    with torch.no_grad():
        ref_random = ref(x_random)
        ref_real = ref(real) if real is not None else None
    path = str(path)
    example = torch.zeros(1, config.in_chans, res, res)
    # write next to the target, verify, and only then rename: a failed check leaves nothing behind
    fd, tmp_path = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=str(Path(path).parent or "."))
    os.close(fd)
    try:
        if fmt == "onnx":
            if int8 and not calibration:
                raise ExportError("--int8 needs --calibration DIR (real images representative of your inputs)")
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    deploy_model, (example,), tmp_path, input_names=["input"], output_names=["logits"],
                    opset_version=opset, dynamo=False,
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if batch == "dynamic" else None)
            session = _ort_session(tmp_path)
            run = lambda x: _ort_run(session, x, batch == "dynamic")  # noqa: E731
        elif fmt == "torchscript":
            if int8:
                raise ExportError("int8 is available for --format onnx (ONNX Runtime quantization)")
            import warnings

            with warnings.catch_warnings():  # TorchScript is deprecated upstream but still what many deploy
                warnings.simplefilter("ignore")
                with torch.no_grad():
                    traced = torch.jit.trace(deploy_model, example)
                torch.jit.save(traced, tmp_path)
                loaded = torch.jit.load(tmp_path)
            run = lambda x: loaded(x).detach().numpy()  # noqa: E731
        else:
            raise ExportError(f"unknown format {fmt!r} (onnx, torchscript)")
        diff_random = float(np.abs(run(x_random) - ref_random.numpy()).max())
        diff_real = float(np.abs(run(real) - ref_real.numpy()).max()) if real is not None else None
        worst = max(diff_random, diff_real or 0.0)
        if not worst <= tolerance:  # also catches NaN
            raise ExportError(f"{path}: export does not match PyTorch: max |logit diff| {worst:.3g} > {tolerance:g}")
        fp32_path = path + ".fp32.onnx" if int8 else path
        os.replace(tmp_path, fp32_path)
    finally:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
    report = ExportReport(path, fmt, diff_random, diff_real, len(real_names))
    if int8:
        if real is None:
            raise ExportError(f"{calibration}: no readable calibration images")
        quantize_int8(fp32_path, path, real)  # the calibration images already decoded for the parity check
        session8 = _ort_session(path)
        fp32_logits = _ort_run(session, real, batch == "dynamic")
        agree = fp32_logits.argmax(1) == _ort_run(session8, real, batch == "dynamic").argmax(1)
        probs = np.sort(torch.from_numpy(fp32_logits).softmax(1).numpy(), axis=1)
        confident = probs[:, -1] - probs[:, -2] > 0.1
        report.int8 = True
        report.top1_agreement = float(agree.mean())
        report.confident_images = int(confident.sum())
        report.top1_agreement_confident = float(agree[confident].mean()) if confident.any() else None
        report.notes.append(f"fp32 model kept at {fp32_path}")
    return report


def quantize_int8(fp32_path: str, out_path: str, batch: torch.Tensor) -> None:
    """ONNX Runtime static quantization: QDQ, per-channel int8 weights, uint8 activations (VNNI-friendly),
    calibrated on ``batch`` (N, C, H, W) of preprocessed real images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .weights import atomic_write

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": batch[i:i + 1].numpy()} for i in range(batch.shape[0])])

        def get_next(self):
            return next(self.items, None)

    import onnx

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
                                                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude))


# ---------------------------------------------------------------------------------------------- predictors

class OnnxPredictor(nn.Module):
    """Runs an exported ONNX file with ONNX Runtime behind the model's own interface (config + forward)."""

    def __init__(self, path: str, config) -> None:
        super().__init__()
        self.config = config
        self.session = _ort_session(path)
        self.dynamic = not isinstance(self.session.get_inputs()[0].shape[0], int)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(_ort_run(self.session, x.float().contiguous(), self.dynamic))


def onnx_predictor(model: nn.Module, int8: bool = False, calibration: str | None = None) -> OnnxPredictor:
    """Export ``model`` to a cached ONNX file (keyed by weights and config) and wrap it."""
    import hashlib

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


# ---------------------------------------------------------------------------------------------- CLI

def cmd_export(args: argparse.Namespace) -> int:
    from .cli import _fail
    from .predict import build_model_for_inference
    from .weights import CheckpointError

    try:
        src = args.model_or_weights
        is_file = Path(src).is_file() and not src.endswith(".json")
        model = build_model_for_inference(None if is_file else src, src if is_file else None, args.pretrained)
        report = export_model(model, args.output, args.format, args.batch, args.resolution, args.int8,
                              args.calibration, args.tolerance)
    except (ExportError, CheckpointError, ValueError, KeyError, RuntimeError) as exc:
        return _fail(str(exc).strip("'\""))
    real = f", real images ({report.real_images}) {report.max_abs_diff_real:.2e}" if report.real_images else ""
    print(f"wrote {report.path} ({report.format}{', int8' if report.int8 else ''}); parity vs PyTorch: "
          f"max |logit diff| random {report.max_abs_diff_random:.2e}{real}")
    if report.int8:
        conf = (f"; {report.top1_agreement_confident:.1%} on the {report.confident_images} where fp32 is confident"
                if report.top1_agreement_confident is not None else "")
        print(f"int8 top-1 agreement with fp32 on {report.real_images} real images: {report.top1_agreement:.1%}{conf}")
    if args.json:
        print(json.dumps(report.__dict__))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX / TorchScript (verified against PyTorch), optional int8")
    p.add_argument("model_or_weights", help="model name, config .json or weights file (.safetensors)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--batch", choices=["static", "dynamic"], default="static")
    p.add_argument("--resolution", type=int)
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--int8", action="store_true", help="ONNX Runtime static quantization (needs --calibration)")
    p.add_argument("--calibration", help="folder of real images for int8 calibration and parity checks")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |logit diff| allowed vs PyTorch")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)
