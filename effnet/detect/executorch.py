"""A detector as an ExecuTorch program (XNNPACK; fp32, or int8 by PT2E calibrated on real images): the raw
per-level outputs (class levels, then box levels: P3..P7, D7x P3..P8) at batch 1, with decoding and NMS in Python
(:class:`effnet.detect.pipeline.DetectionPipeline`, the same code as the PyTorch path).

Why not end to end, as the ONNX and OpenVINO graphs are: ``torch.export`` stops at the size of NMS's output
(data-dependent: "Could not guard on data-dependent expression" at the slice after ``nms``), and past that,
``torchvision::nms`` has no ExecuTorch kernel, so the program would need a custom C++ operator in every runtime that
loads it. The raw outputs lower whole to XNNPACK (with :func:`xnnpack_friendly`), and the post-processing is the
PyTorch path's own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..deploy import executorch as et
from ..deploy.exported import ExportInfo, write_sidecar
from ..deploy.optimize import optimize
from ..errors import ExportError, UsageError
from ..files import atomic_write, new_temp
from ..models.nets.bifpn import HeadNet, NearestUp2x, Resample
from .export import DetectorExportReport, RawDetector, checked
from .pipeline import CANDIDATE_SCORE_THRESHOLD as SCORE_THRESHOLD  # the verification's, as the end-to-end graphs'
from .pipeline import DetectionPipeline
from .verify import box_agreement, calibration_batch, match_detections, real_pairs


def xnnpack_friendly(model: nn.Module) -> nn.Module:
    """``model`` (in place) with every exact 2x nearest upsampling as :class:`NearestUp2x`, which XNNPACK runs."""
    for module in model.modules():
        if isinstance(module, Resample) and module.direction > 0:
            module.up2x = NearestUp2x(module.channels)
    return model


def output_convs(model: nn.Module) -> tuple[str, ...]:
    """The qualified names of the heads' per-level output convs in a folded inference copy: int8 keeps them in
    float. Quantized, the class logits and box offsets they produce are rounded to 256 levels over their whole
    range, which blurs the ranking AP measures: a Lite0 fine-tuned on detect-digits lost 2.11 AP points (x100) in
    int8 with them quantized and 0.07 with them in float (benchmarks/detect_int8_ap.py)."""
    return tuple(f"{name}.folded.{level}.{len(convs) - 1}" for name, module in model.named_modules()
                 if isinstance(module, HeadNet) and module.folded is not None
                 for level, convs in enumerate(module.folded))


def _detections(pipeline: DetectionPipeline, outputs: list[torch.Tensor], hw: torch.Tensor):
    """Final detections (input pixels) of one image from its flat raw outputs (as many levels as the config has)."""
    return pipeline.flat(outputs, clip_sizes=[hw])[0]


def _int8_agreement(pipeline: DetectionPipeline, fp32: et.PteRunner, int8: et.PteRunner, pairs) -> dict:
    """fp32 vs int8 programs on real images (:func:`effnet.detect.verify.box_agreement`)."""
    def boxes(runner, x, hw):
        return _detections(pipeline, [torch.from_numpy(o) for o in runner.outputs(x)], hw).boxes

    return box_agreement([(boxes(fp32, x, hw), boxes(int8, x, hw)) for x, hw in pairs])


def export_executorch_detector(model: nn.Module, path: str | os.PathLike, resolution: int | None = None,
                               images: list[str | os.PathLike] | None = None, int8: bool = False,
                               calibration: str | None = None, tolerance: float = 1e-3
                               ) -> tuple[DetectorExportReport, dict]:
    """``path`` (.pte): the raw outputs at batch 1, checked in ExecuTorch's runtime against PyTorch on real images
    before it is kept -- every output within ``tolerance`` and the same final detections (boxes within
    ``tolerance`` x input size / 100 px). ``int8``: PT2E calibrated on ``calibration`` (the fp32 program, verified,
    is kept at ``PATH.fp32.pte``); the report then says how its detections compare with fp32's. The detector's
    config (preprocessing, class names) is written to ``PATH.json``."""
    if int8 and not calibration:
        raise UsageError("--int8 needs --calibration DIR (real images to calibrate on)")
    model = model.eval()
    config, res = model.config, resolution or model.config.resolution
    deploy = RawDetector(xnnpack_friendly(optimize(model, channels_last=False))).eval()  # BatchNorm folded
    pairs = real_pairs(config, res, images)
    pipeline = DetectionPipeline.for_input(config, res, score_threshold=SCORE_THRESHOLD)
    path = str(path)
    fp32_path = f"{path}.fp32.pte" if int8 else path
    tmp = new_temp(path, directory=True)
    try:
        program = Path(tmp) / "fp32.pte"
        program.write_bytes(et.lower(deploy, torch.zeros(1, 3, res, res)))
        box_diff, score_diff, out_diff = _verify(model, et.PteRunner(program), pairs, pipeline, tolerance)
        os.replace(program, fp32_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    agreement = {}
    if int8:
        feeds = calibration_batch(config, res, calibration)
        calib = torch.from_numpy(np.concatenate([feed["image"] for feed in feeds]))
        program = et.lower(deploy, calib[:1], calib, keep_float=output_convs(deploy))
        atomic_write(path, lambda t: Path(t).write_bytes(program))
        agreement = _int8_agreement(pipeline, et.PteRunner(fp32_path), et.PteRunner(path), pairs)
    report = DetectorExportReport(path, False, len(pairs), box_diff, score_diff, True, False)
    # the runtime side needs no flags: input size, mean/std and class names beside each program
    verified = checked(report) | {"max_output_diff": out_diff}
    write_sidecar(fp32_path, config.replace(resolution=res), ExportInfo("executorch", graph="raw", verified=verified))
    if int8:
        write_sidecar(path, config.replace(resolution=res), ExportInfo("executorch", "int8", "raw", verified=agreement))
    return report, dict(agreement, max_output_diff=out_diff)


def _verify(model: nn.Module, runner: et.PteRunner, pairs, pipeline: DetectionPipeline,
            tolerance: float) -> tuple[float, float, float]:
    """(max box diff px, max score diff, max raw output diff) of the program vs PyTorch; raises when they differ."""
    box_diff = score_diff = out_diff = 0.0
    for x, hw in pairs:
        with torch.no_grad():
            class_out, box_out = model(x)
        want = [*class_out, *box_out]
        got = [torch.from_numpy(o) for o in runner.outputs(x)]
        out_diff = max(out_diff, max(float((g - w).abs().max()) for g, w in zip(got, want)))
        a, b = _detections(pipeline, want, hw), _detections(pipeline, got, hw)
        d_box, d_score, same = match_detections(b.boxes.numpy(), b.scores.numpy(), b.labels.numpy(), a, tolerance)
        box_diff, score_diff = max(box_diff, d_box), max(score_diff, d_score)
        if not same or out_diff > tolerance or box_diff > tolerance * max(1.0, pipeline.height / 100):
            raise ExportError(f"ExecuTorch disagrees with PyTorch on real images (same detections: {same}, max output "
                              f"diff {out_diff:.3g}, max box diff {box_diff:.3g} px); nothing written")
    return box_diff, score_diff, out_diff


def executorch_runner(model: nn.Module, int8: bool, calibration: str | None):
    """``model``'s raw-output program, exported and verified once into the cache (keyed by weights, config and
    calibration images), as a function: preprocessed batch -> (class outputs, box outputs) like the model's."""
    from ..deploy.predictors import cache_path, first_run

    if int8 and not calibration:
        raise UsageError("--backend executorch-int8 needs --calibration DIR (real images to calibrate int8 on)")
    path = cache_path(model, "detect-executorch", "int8" if int8 else "fp32", calibration if int8 else None, "pte")
    if not path.exists():
        with first_run(model.config.name, "executorch" + ("-int8" if int8 else ""), path.parent, int8):
            export_executorch_detector(model, path, int8=int8, calibration=calibration)
    runner = et.PteRunner(path)
    pipeline = DetectionPipeline.for_input(model.config)  # for its level count: class levels, then box levels

    def run(x: torch.Tensor):
        return pipeline.split([torch.from_numpy(o) for o in runner.outputs(x)])

    return run
