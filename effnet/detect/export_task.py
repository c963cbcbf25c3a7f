"""What ``effnet export`` (and ``effnet detect export``) does with a detector: by format, the end-to-end ONNX graph
or OpenVINO IR (:mod:`effnet.detect.export`), or an ExecuTorch program of the raw outputs
(:mod:`effnet.detect.executorch`); the lines it prints and the report ``--json`` writes."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..deploy.options import Exported, ExportOptions
from ..errors import UsageError
from .export import export_detector, export_openvino_detector


def export_for_task(model: nn.Module, options: ExportOptions) -> Exported:
    """``effnet export`` / ``effnet detect export`` for a detector: end to end (boxes, scores, classes with decoding
    and NMS inside) as ONNX or OpenVINO IR (``--int8 --calibration DIR``: NNCF), ``raw`` per-level ONNX outputs, or
    an ExecuTorch program of the raw outputs (``--int8``: PT2E)."""
    if options.format not in ("onnx", "openvino", "executorch") or (options.int8 and options.format == "onnx") or (
            options.setting("raw", False) and options.format != "onnx"):
        raise UsageError("detectors export to --format onnx (fp32) or --format openvino [--int8 --calibration DIR], "
                         "end to end (boxes with NMS inside), or --raw outputs to onnx; --format executorch "
                         "[--int8 --calibration DIR] gives the raw outputs (decoding + NMS by effnet's Predictor)")
    images = list(options.images) or (sorted(str(p) for p in Path(options.calibration).rglob("*") if p.is_file())[:16]
                                      if options.calibration else None)
    if options.format == "executorch":
        return _export_executorch(model, options, images)
    if options.format == "openvino":
        r, agreement = export_openvino_detector(model, options.output, options.resolution, images, options.int8,
                                                options.calibration)
        line = (f"wrote {r.path} + .bin (OpenVINO IR{' int8 (NNCF)' if options.int8 else ''}, end to end: boxes, "
                f"scores, classes; decoding + NMS inside); its ONNX graph checked in ONNX Runtime and OpenVINO vs "
                f"PyTorch on {r.images} real images: max box diff {r.max_box_diff:.2e} px; config at {r.path}.json")
        if agreement:
            line += (f"; int8 vs fp32: {agreement['int8_detections']} vs {agreement['fp32_detections']} detections, "
                     f"{agreement['fp32_kept_by_int8']:.0%} of fp32's found at IoU >= 0.5")
        return Exported([line], dict(r.__dict__, **agreement))
    raw = options.setting("raw", False)
    r = export_detector(model, options.output, options.resolution, raw, images)
    what = f"raw outputs (class/box {_levels(model)})" if raw else "end to end: boxes, scores, classes; decoding + NMS inside"
    checked = "ONNX Runtime" + (" and OpenVINO" if r.openvino_checked else "")
    line = (f"wrote {r.path} ({what}); {checked} vs PyTorch on {r.images} real images: max box diff "
            f"{r.max_box_diff:.2e}" + ("" if raw else f" px, max score diff {r.max_score_diff:.2e}")
            + f"; config at {r.path}.json")
    return Exported([line], dict(r.__dict__))


def _levels(model: nn.Module) -> str:
    """The pyramid levels of the raw outputs, as a reader counts them: P3-P7 (D7x: P3-P8)."""
    return f"P{model.config.min_level}-P{model.config.max_level}"


def _export_executorch(model: nn.Module, options: ExportOptions, images) -> Exported:
    from .executorch import export_executorch_detector  # ExecuTorch loads only for this format

    r, extra = export_executorch_detector(model, options.output, options.resolution, images, options.int8,
                                          options.calibration)
    line = (f"wrote {r.path} (ExecuTorch + XNNPACK{', int8 (PT2E)' if options.int8 else ''}, batch 1: raw outputs "
            f"class/box {_levels(model)}; decoding + NMS in Python by effnet.detect.Predictor, --backend executorch); "
            f"{'its fp32 program ' if options.int8 else ''}checked in ExecuTorch's runtime vs PyTorch on "
            f"{r.images} real images: max output diff {extra['max_output_diff']:.2e}, max box diff "
            f"{r.max_box_diff:.2e} px; config at {r.path}.json")
    if options.int8:
        line += (f"; int8 vs fp32: {extra['int8_detections']} vs {extra['fp32_detections']} detections, "
                 f"{extra['fp32_kept_by_int8']:.0%} of fp32's found at IoU >= 0.5; fp32 kept at {r.path}.fp32.pte")
    return Exported([line], dict(r.__dict__, **extra))
