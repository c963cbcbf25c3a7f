"""End-to-end ONNX export of a detector: image tensor in; boxes, scores and classes out, with box decoding and
non-maximum suppression inside the graph (torchvision's ``nms`` exports as ONNX ``NonMaxSuppression``).
Verified against the PyTorch path on real images before the file is kept. ``raw=True`` exports the raw
per-level outputs instead (for runtimes that do their own post-processing).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..cpu import int8_scheme
from ..deploy.exported import ExportInfo, write_sidecar
from ..errors import ExportError, UsageError
from ..files import atomic_write
from .pipeline import CANDIDATE_SCORE_THRESHOLD, DetectionPipeline
from .verify import box_agreement, calibration_batch, compare_detections, real_pairs

__all__ = ["EndToEndDetector", "RawDetector", "DetectorExportReport", "export_detector", "export_openvino_detector",
           "EndToEndEngine", "end_to_end_engine", "box_agreement"]


class EndToEndDetector(nn.Module):
    """(1, 3, S, S) normalised, letterboxed image and ``image_hw`` (2,), the image's own (height, width) inside it in
    input pixels (S, S for a square image) -> boxes (K, 4) xyxy input pixels, scores (K,), classes (K,): the model,
    then :meth:`effnet.detect.pipeline.DetectionPipeline.graph` (the post-processing in graph-friendly form)."""

    def __init__(self, model: nn.Module, resolution: int, max_candidates: int = 5000, iou_threshold: float = 0.5,
                 max_detections: int = 100, score_threshold: float = CANDIDATE_SCORE_THRESHOLD) -> None:
        super().__init__()
        self.model, self.resolution = model.eval(), resolution
        self.pipeline = DetectionPipeline.for_input(model.config, resolution, score_threshold=score_threshold,
                                                    max_detections=max_detections, max_candidates=max_candidates,
                                                    iou_threshold=iou_threshold)

    @property
    def score_threshold(self) -> float:
        return self.pipeline.score_threshold

    def forward(self, x: torch.Tensor, image_hw: torch.Tensor):
        return self.pipeline.graph(*self.model(x), image_hw)


class RawDetector(nn.Module):
    """The raw outputs as a flat tuple: class levels then box levels (P3..P7; D7x P3..P8) -- ONNX outputs are
    tensors, not lists; :meth:`~effnet.detect.pipeline.DetectionPipeline.split` reads them back."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor):
        class_out, box_out = self.model(x)
        return (*class_out, *box_out)


@dataclass
class DetectorExportReport:
    path: str
    end_to_end: bool
    images: int
    max_box_diff: float  # pixels, end to end; max |output diff| for raw
    max_score_diff: float
    same_detections: bool
    openvino_checked: bool


def export_detector(model: nn.Module, path: str | os.PathLike, resolution: int | None = None, raw: bool = False,
                    images: list[str | os.PathLike] | None = None, tolerance: float = 1e-2,
                    check_openvino: bool = True) -> DetectorExportReport:
    """Write ``path`` (ONNX) and check it with ONNX Runtime (and OpenVINO when installed) against PyTorch on
    real images; raises :class:`ExportError` and keeps nothing when they disagree. Scores must agree within
    ``tolerance``, end-to-end boxes within ``tolerance`` x input size / 100 px (0.032 px at 320: a 300 px box's
    exp() in another runtime's arithmetic moves its corners by ~1e-4 of its size)."""
    from ..deploy.ort import ort_session

    model = model.eval()
    res = resolution or model.config.resolution
    wrapper = (RawDetector(model) if raw else EndToEndDetector(model, res)).eval()
    pipeline = DetectionPipeline.for_input(model.config, res)
    pairs = real_pairs(model.config, res, images)
    feeds = [{"image": x.numpy()} if raw else {"image": x.numpy(), "image_hw": hw.numpy()} for x, hw in pairs]
    with torch.no_grad():  # raw: the outputs themselves; end to end: the PyTorch path's detections
        expected = [list(wrapper(x)) if raw else pipeline(*model(x), clip_sizes=[hw])[0] for x, hw in pairs]
    names = pipeline.output_names() if raw else ["boxes", "scores", "classes"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (pairs[0][0],) if raw else pairs[0], str(tmp_path), input_names=list(feeds[0]),
                              output_names=names, opset_version=17, dynamo=False)
        session = ort_session(str(tmp_path))
        outputs = [session.run(None, feed) for feed in feeds]
        box_tolerance = tolerance if raw else tolerance * max(1.0, res / 100)
        box_diff, score_diff, same = compare_detections(outputs, expected, not raw, tolerance)
        if not same or box_diff > box_tolerance or score_diff > tolerance:
            raise ExportError(f"ONNX Runtime disagrees with PyTorch on real images (same detections: {same}, max box "
                              f"diff {box_diff:.3g}, max score diff {score_diff:.3g}); nothing written")
        ov_checked = (_check_openvino(tmp_path, feeds, outputs, expected, not raw, tolerance, box_tolerance)
                      if check_openvino else False)
        data = tmp_path.read_bytes()
    atomic_write(path, lambda p: Path(p).write_bytes(data))
    report = DetectorExportReport(str(path), not raw, len(pairs), box_diff, score_diff, same, ov_checked)
    write_sidecar(path, model.config.replace(resolution=res),
                  ExportInfo("onnx", graph="raw" if raw else "end_to_end", verified=checked(report)))
    return report


def checked(report: DetectorExportReport) -> dict:
    """The parity numbers an export's config records (:class:`effnet.deploy.exported.ExportInfo`)."""
    return {k: getattr(report, k) for k in ("images", "max_box_diff", "max_score_diff", "same_detections")}


def _check_openvino(path: Path, feeds: list[dict], ort_outputs, expected, end_to_end: bool, tolerance: float,
                    box_tolerance: float) -> bool:
    """Run the same file in OpenVINO (if installed) and compare with PyTorch as ONNX Runtime was (detections paired
    by class and score: near-tied scores may come in another order)."""
    try:
        import openvino as ov
    except ImportError:
        return False
    # f32: OpenVINO's CPU plugin otherwise runs in bf16 where the processor has it, and NMS then keeps other boxes
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for feed, want, ref in zip(feeds, ort_outputs, expected):
        if want[0].size == 0:  # OpenVINO 2026.4 returns one padding row, not an empty tensor, for "no detections"
            continue
        got = compiled(feed)
        got = [got[o] for o in compiled.outputs]
        box_diff, score_diff, same = compare_detections([got], [ref], end_to_end, tolerance)
        if not same or box_diff > box_tolerance or score_diff > tolerance:
            raise ExportError(f"OpenVINO disagrees with PyTorch on {path.name} (same detections: {same}, max box "
                              f"diff {box_diff:.3g}, max score diff {score_diff:.3g}); nothing written")
    return True


# ---------------------------------------------------------------------------------------------- OpenVINO, engines

def export_openvino_detector(model: nn.Module, path: str | os.PathLike, resolution: int | None = None,
                             images: list[str | os.PathLike] | None = None, int8: bool = False,
                             calibration: str | None = None) -> tuple[DetectorExportReport, dict]:
    """OpenVINO IR (``path`` .xml + .bin) of the end-to-end graph: the ONNX graph verified by :func:`export_detector`
    (ONNX Runtime and OpenVINO vs PyTorch on real images), converted; ``int8``: NNCF post-training quantization
    calibrated on ``calibration`` (convolutions int8; decoding and NMS stay float). Returns the report and, for
    int8, how its detections compare with fp32 on the verification images."""
    if int8 and not calibration:
        raise UsageError("--int8 needs --calibration DIR (real images to calibrate on)")
    res = resolution or model.config.resolution
    with tempfile.TemporaryDirectory() as tmp:
        report = export_detector(model, Path(tmp) / "model.onnx", res, images=images)
        agreement = _write_ir(Path(tmp) / "model.onnx", path, model.config, res, int8, calibration, images)
    report.path = str(Path(path).with_suffix(".xml"))
    write_sidecar(report.path, model.config.replace(resolution=res),
                  ExportInfo("openvino", "int8" if int8 else "fp32", "end_to_end", verified=checked(report) | agreement,
                             int8_scheme=int8_scheme().name if int8 else None))
    return report, agreement


def _write_ir(onnx_path: Path, path: str | os.PathLike, config, resolution: int, int8: bool,
              calibration: str | None, images=None) -> dict:
    """The verified end-to-end ONNX graph as OpenVINO IR at ``path`` (.xml + .bin), int8 by NNCF when asked."""
    from ..deploy.openvino import compile_ir, quantize_int8, require_openvino, save_ir

    ov_model = require_openvino().convert_model(str(onnx_path))
    agreement = {}
    if int8:
        fp32 = compile_ir(ov_model)
        ov_model = quantize_int8(ov_model, calibration_batch(config, resolution, calibration))
        agreement = _int8_agreement(fp32, compile_ir(ov_model), real_pairs(config, resolution, images))
    with tempfile.TemporaryDirectory() as tmp:
        save_ir(ov_model, Path(tmp) / "model.xml")
        target = Path(path).with_suffix(".xml")
        for ext in (".bin", ".xml"):  # .xml last: a reader never finds an .xml without its weights
            data = (Path(tmp) / f"model{ext}").read_bytes()
            atomic_write(target.with_suffix(ext), lambda p, data=data: Path(p).write_bytes(data))
    return agreement


def _int8_agreement(fp32, int8, inputs: list[torch.Tensor]) -> dict:
    """fp32 vs int8 compiled graphs on real images (:func:`box_agreement`)."""
    pairs = []
    for x, hw in inputs:
        feed = {"image": x.numpy(), "image_hw": hw.numpy()}
        pairs.append((torch.from_numpy(fp32(feed)[fp32.outputs[0]]), torch.from_numpy(int8(feed)[int8.outputs[0]])))
    return box_agreement(pairs)


class EndToEndEngine:
    """The exported end-to-end graph behind :class:`effnet.detect.Predictor`: one image at a time (the graph's
    batch is 1) with its own (height, width), the graph's score threshold (``CANDIDATE_SCORE_THRESHOLD``) raised to the caller's."""

    def __init__(self, run, max_detections: int) -> None:
        self.run, self.max_detections = run, max_detections

    def __call__(self, x: torch.Tensor, valid: torch.Tensor, score_threshold: float) -> list[tuple]:
        out = []
        for image, hw in zip(x, valid):
            feed = {"image": image[None].detach().float().contiguous().numpy(), "image_hw": hw.numpy()}
            boxes, scores, labels = (torch.from_numpy(np.asarray(t)) for t in self.run(feed))
            keep = scores > score_threshold
            out.append((boxes[keep][: self.max_detections].float(), scores[keep][: self.max_detections].float(),
                        labels[keep][: self.max_detections].long()))
        return out


def end_to_end_engine(model: nn.Module, backend: str, calibration: str | None = None, threads: int | None = None,
                      max_detections: int = 100) -> EndToEndEngine:
    """``model``'s end-to-end graph for ``backend`` (onnx, openvino, openvino-int8), exported and verified once
    into the cache (keyed by weights, config and calibration images), then run."""
    from ..deploy.predictors import cache_path, first_run, precision_key

    int8 = backend.endswith("-int8")
    if int8 and not calibration:
        raise UsageError(f"--backend {backend} needs --calibration DIR (real images to calibrate int8 on)")
    onnx_path = cache_path(model, "detect-onnx", "fp32", None, "onnx")
    if not onnx_path.exists():  # every backend starts from the one verified ONNX graph
        with first_run(model.config.name, "onnx", onnx_path.parent, False):
            export_detector(model, onnx_path)
    if backend == "onnx":
        from ..deploy.ort import ort_session

        session = ort_session(str(onnx_path), threads, spinning=threads is None)
        return EndToEndEngine(lambda feed: session.run(None, feed), max_detections)
    from ..deploy.openvino import compile_ir

    path = cache_path(model, "detect-openvino", precision_key("openvino", int8), calibration if int8 else None, "xml")
    if not path.exists():
        with first_run(model.config.name, backend, path.parent, int8):
            _write_ir(onnx_path, path, model.config, model.config.resolution, int8, calibration)
    compiled = compile_ir(str(path), "fp32", threads)
    return EndToEndEngine(lambda feed: [v for v in compiled(feed).values()], max_detections)


def file_engines(exported, backend: str = "auto", threads: int | None = None, max_detections: int = 100):
    """What runs a detector's exported file (:class:`effnet.deploy.predictors.ExportedFile`, its config beside it):
    ``(engine, runner)`` -- an :class:`EndToEndEngine` for an end-to-end graph (ONNX or OpenVINO IR), or a function
    preprocessed batch -> (class outputs, box outputs) for a raw one (ONNX ``--raw`` or ExecuTorch), whose decoding
    and NMS :class:`~effnet.detect.Predictor` does as for the model."""
    exported.check_backend(backend)
    info, path = exported.info, exported.path
    if info.graph == "end_to_end":
        if info.format == "onnx":
            from ..deploy.ort import ort_session

            session = ort_session(path, threads, spinning=threads is None)
            return EndToEndEngine(lambda feed: session.run(None, feed), max_detections), None
        from ..deploy.openvino import compile_ir

        compiled = compile_ir(path, "bf16" if backend == "openvino-bf16" else "fp32", threads)
        return EndToEndEngine(lambda feed: [v for v in compiled(feed).values()], max_detections), None
    pipeline = DetectionPipeline.for_input(exported.config)  # for its level count: class levels, then box levels
    if info.format == "executorch":
        from ..deploy.executorch import PteRunner

        program = PteRunner(path)
        return None, lambda x: pipeline.split([torch.from_numpy(o) for o in program.outputs(x)])
    from ..deploy.ort import ort_session

    session = ort_session(path, threads, spinning=threads is None)

    def run_raw(x: torch.Tensor):  # the raw graph is exported at batch 1
        rows = [session.run(None, {"image": row.numpy()}) for row in x.float().contiguous().split(1)]
        return pipeline.split([torch.from_numpy(np.concatenate(level)) for level in zip(*rows)])

    return None, run_raw
