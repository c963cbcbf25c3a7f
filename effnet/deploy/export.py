"""Export to ONNX / OpenVINO IR / TorchScript, verified against PyTorch on random and real images before the file
is kept; int8 through ONNX Runtime static quantization or NNCF (OpenVINO)."""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..cpu import int8_scheme
from ..data import eval_transform, load_image
from ..errors import ExportError, ImageLoadError
from ..files import atomic_write, new_temp
from . import executorch as et
from . import openvino as ovino
from .exported import ExportInfo, model_files, write_sidecar
from .optimize import freeze_same_padding, optimize, to_plain_ops
from .ort import ort_run, ort_session, quantize_int8


# the formats ``effnet export --format`` writes, with their file extensions
EXTENSIONS = {"onnx": "onnx", "openvino": "xml", "torchscript": "pt", "executorch": "pte"}
FORMATS = tuple(EXTENSIONS)


@dataclass(frozen=True)
class ExportOutputs:
    """What a task says about its model's output when it is exported by :func:`export_model`: the graph's output
    name, what a value is called in the parity message, and how int8 is compared with fp32 on real images
    (``agreement(fp32, int8) -> dict``, merged into the report; None: the largest difference only)."""

    name: str = "output"
    what: str = "output"
    agreement: Callable[[np.ndarray, np.ndarray], dict] | None = None
    # True: ``tolerance`` is a fraction of the largest |output| of PyTorch's (at least 1). A trained segmenter's
    # logits over noise reach ~1e3, where fp32 PyTorch is itself 2e-3 from float64 and folding BatchNorm moves a
    # logit by 5e-3; a classifier's logits stay near 10, and its --tolerance stays absolute
    relative: bool = False


@dataclass
class ExportReport:
    path: str
    format: str
    max_abs_diff_random: float
    max_abs_diff_real: float | None
    real_images: int
    int8: bool = False
    int8_scheme: str | None = None  # effnet.cpu.int8_scheme's name for ONNX Runtime / OpenVINO int8
    agreement: dict = field(default_factory=dict)  # int8 vs fp32 on the real images (the task's measure)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The report ``--json`` prints: the fields, with the agreement measures at the top level."""
        out = {k: v for k, v in self.__dict__.items() if k != "agreement"}
        return {**out, **self.agreement}


def real_batch(config, images_dir: str | None, limit: int = 256) -> tuple[torch.Tensor | None, list[str]]:
    """Real images for parity checks: files from ``images_dir`` (recursively), else scikit-image's photos."""
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


def _write(deploy_model: nn.Module, example: torch.Tensor, tmp_path: str, fmt: str, batch: str, opset: int,
           int8: bool, calibration: str | None, output: str):
    """Write the file in ``fmt`` and return a function that runs it on a batch (for the parity check)."""
    if int8 and not calibration:
        raise ExportError("--int8 needs --calibration DIR (real images representative of your inputs)")
    with warnings.catch_warnings():  # tracer warnings; TorchScript is deprecated upstream but still deployed
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(
                deploy_model, (example,), tmp_path, input_names=["input"], output_names=[output],
                opset_version=opset, dynamo=False,
                dynamic_axes={"input": {0: "batch"}, output: {0: "batch"}} if batch == "dynamic" else None)
            session = ort_session(tmp_path)
            return lambda x: ort_run(session, x, batch == "dynamic")
        if fmt == "openvino":
            ovino.save_ir(ovino.convert(deploy_model, example, batch == "dynamic"), tmp_path)
            compiled = ovino.compile_ir(tmp_path, "fp32")  # read back from disk: the check covers the files
            return lambda x: ovino.ov_run(compiled, x)
        if fmt == "executorch":
            if batch == "dynamic":
                raise ExportError("ExecuTorch programs are exported at batch 1 (--batch static)")
            Path(tmp_path).write_bytes(et.lower(deploy_model, example))
            return et.PteRunner(tmp_path)
        if fmt == "torchscript":
            if int8:
                raise ExportError("int8 is available for --format onnx, openvino and executorch")
            with torch.no_grad():
                traced = torch.jit.trace(deploy_model, example)
            torch.jit.save(traced, tmp_path)
            loaded = torch.jit.load(tmp_path)
            return lambda x: loaded(x).detach().numpy()
    raise ExportError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")


def _files(path: str) -> list[str]:
    """The files making up one model in the order they are moved into place: the file referring to the other
    (OpenVINO's .xml, beside its .bin) last."""
    return [str(p) for p in reversed(model_files(path))]


def _move_into_place(sources: list[str], targets: list[str]) -> None:
    """Rename a model's files over their targets. Of a pair, the file that refers to the other (OpenVINO's .xml)
    goes last, and an old one is removed first: a kill between the renames leaves no old .xml over a new .bin."""
    if len(targets) > 1:
        Path(targets[-1]).unlink(missing_ok=True)
    for src, dst in zip(sources, targets):
        os.replace(src, dst)


def _fp32_path(path: str, fmt: str) -> str:
    """Where an int8 export keeps its verified fp32 model: m.onnx -> m.onnx.fp32.onnx, m.xml -> m.fp32.xml."""
    return str(Path(path).with_suffix(".fp32.xml")) if fmt == "openvino" else f"{path}.fp32.{EXTENSIONS[fmt]}"


def _quantize(report: ExportReport, fp32_path: str, real: torch.Tensor, dynamic: bool, deploy_model: nn.Module,
              outputs: ExportOutputs) -> None:
    """int8 next to the verified fp32 file; its agreement with fp32 on the real images (the task's measure, and
    the largest difference) into ``report``."""
    scheme = int8_scheme()  # by the features of the CPU this runs on (XNNPACK's quantizer has one scheme)
    if report.format != "executorch":
        report.int8_scheme = scheme.name
        report.notes.append(f"int8 scheme {scheme.name} for this CPU ({scheme.reason})")
    if report.format == "executorch":  # PT2E quantizes the graph before lowering, calibrated on the real images
        atomic_write(report.path, lambda tmp: Path(tmp).write_bytes(et.lower(deploy_model, real[:1], real)))
        fp32_out, int8_out = et.PteRunner(fp32_path)(real), et.PteRunner(report.path)(real)
    elif report.format == "openvino":
        # NNCF on the verified IR; the calibration images are the ones already decoded for the parity check
        quantized = ovino.quantize_int8(ovino.require_openvino().Core().read_model(fp32_path), real, scheme=scheme)
        tmp = new_temp(report.path, directory=True)
        try:
            tmp_xml = os.path.join(tmp, "int8.xml")
            ovino.save_ir(quantized, tmp_xml)
            _move_into_place(_files(tmp_xml), _files(report.path))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        fp32_out = ovino.ov_run(ovino.compile_ir(fp32_path), real)
        int8_out = ovino.ov_run(ovino.compile_ir(report.path), real)
    else:
        quantize_int8(fp32_path, report.path, real, scheme)
        fp32_out = ort_run(ort_session(fp32_path), real, dynamic)
        int8_out = ort_run(ort_session(report.path), real, dynamic)
    report.int8 = True
    report.agreement = {"int8_max_abs_diff": float(np.abs(fp32_out - int8_out).max())}
    if outputs.agreement is not None:
        report.agreement.update(outputs.agreement(fp32_out, int8_out))
    report.notes.append(f"fp32 model kept at {fp32_path}")


def _scale(*outputs: torch.Tensor | None) -> float:
    """The largest |value| of PyTorch's outputs, at least 1: what a relative tolerance is a fraction of."""
    return max(1.0, *(float(o.abs().max()) for o in outputs if o is not None and o.numel()))


def export_model(model: nn.Module, path: str | os.PathLike, fmt: str = "onnx", batch: str = "static",
                 resolution: int | None = None, int8: bool = False, calibration: str | None = None,
                 tolerance: float = 1e-3, opset: int = 17, outputs: ExportOutputs = ExportOutputs(),
                 stage: Callable[[str], None] = lambda what: None) -> ExportReport:
    """Export ``model`` (plain ops, eval, BN folded) and verify the file against PyTorch.

    Parity is checked on random inputs and on real images (``calibration`` folder, else scikit-image photos):
    the largest absolute output difference must stay under ``tolerance`` (a fraction of the largest |output| with
    ``outputs.relative``) or :class:`ExportError` is raised.
    ``fmt`` "openvino" writes OpenVINO IR: ``path`` (.xml) and the .bin beside it, checked in fp32.
    With ``int8``, ONNX Runtime static quantization (QDQ, per-channel weights) or NNCF post-training quantization
    (OpenVINO) calibrated on ``calibration`` images; the report gives the agreement with fp32 on those images that
    ``outputs`` (the task's :class:`ExportOutputs`: a classifier's top-1) measures. The graph's output is named
    ``outputs.name``. ``stage(what)`` is called as each step starts (a progress display).
    """
    config = model.config
    res = resolution or config.resolution
    ref = to_plain_ops(copy.deepcopy(model)).eval()
    deploy_model = optimize(ref, channels_last=False)
    freeze_same_padding(deploy_model, res)
    x_random = torch.randn(2 if batch == "dynamic" else 1, config.in_chans, res, res, generator=torch.Generator().manual_seed(0))
    real, real_names = real_batch(config.replace(resolution=res), calibration)
    with torch.no_grad():
        ref_random = ref(x_random)
        ref_real = ref(real) if real is not None else None
    path = str(path)
    # write next to the target, verify, and only then rename: a failed check (or a kill) leaves no target behind
    tmp_dir = str(new_temp(path, directory=True))
    tmp_path = os.path.join(tmp_dir, "model.xml" if fmt == "openvino" else "model")
    try:
        stage(f"writing {fmt}")
        run = _write(deploy_model, torch.zeros(1, config.in_chans, res, res), tmp_path, fmt, batch, opset, int8,
                     calibration, outputs.name)
        stage("checking it against PyTorch")
        diff_random = float(np.abs(run(x_random) - ref_random.numpy()).max())
        diff_real = float(np.abs(run(real) - ref_real.numpy()).max()) if real is not None else None
        worst = max(diff_random, diff_real or 0.0)
        bound = tolerance * _scale(ref_random, ref_real) if outputs.relative else tolerance
        if not worst <= bound:  # also catches NaN
            raise ExportError(f"{path}: export does not match PyTorch: max |{outputs.what} diff| {worst:.3g} > "
                              f"{bound:.3g}")
        fp32_path = _fp32_path(path, fmt) if int8 else path
        _move_into_place(_files(tmp_path), _files(fp32_path))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    report = ExportReport(path, fmt, diff_random, diff_real, len(real_names))
    saved = config.replace(resolution=res)  # the preprocessing, class names and input size travel with the file
    checked = {"max_abs_diff_random": diff_random, "max_abs_diff_real": diff_real, "real_images": len(real_names)}
    write_sidecar(fp32_path, saved, ExportInfo(fmt, "fp32", batch=batch, verified=checked))
    if int8:
        if real is None:
            raise ExportError(f"{calibration}: no readable calibration images")
        stage(f"calibrating int8 on {len(real)} images")
        _quantize(report, fp32_path, real, batch == "dynamic", deploy_model, outputs)
        write_sidecar(path, saved, ExportInfo(fmt, "int8", batch=batch, verified=report.agreement,
                                              int8_scheme=report.int8_scheme))
    report.notes.append(f"config (task, preprocessing, class names) at {path}.json")
    return report
