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
from torchvision.ops import nms

from ..data import load_image
from ..data.coco import detection_eval_image
from ..errors import ExportError, UsageError
from ..files import atomic_write
from .boxes import anchors_for, decode, flatten_outputs, postprocess


class EndToEndDetector(nn.Module):
    """(1, 3, S, S) normalised, letterboxed image and ``image_hw`` (2,), the image's own (height, width) inside it in
    input pixels (S, S for a square image) -> boxes (K, 4) xyxy input pixels, scores (K,), classes (K,).

    The same steps as :func:`effnet.detect.boxes.postprocess` in graph-friendly form: anchors are a constant
    for the fixed input size; top-k candidates, decoding, clipping to the image (before NMS, as effdet), score
    threshold, per-class NMS, at most ``max_detections``.
    """

    def __init__(self, model: nn.Module, resolution: int, max_candidates: int = 5000, iou_threshold: float = 0.5,
                 max_detections: int = 100, score_threshold: float = 0.05) -> None:
        super().__init__()
        self.model, self.resolution = model.eval(), resolution
        self.num_classes = model.config.num_classes
        self.register_buffer("anchors", anchors_for(model.config, resolution, resolution), persistent=False)
        self.k = min(max_candidates, self.anchors.shape[0] * self.num_classes)
        self.iou_threshold, self.max_detections, self.score_threshold = iou_threshold, max_detections, score_threshold

    def forward(self, x: torch.Tensor, image_hw: torch.Tensor):
        class_out, box_out = self.model(x)
        cls, box = flatten_outputs(class_out, box_out, self.num_classes)
        logits, idx = cls[0].reshape(-1).topk(self.k)
        anchor_idx, labels = idx // self.num_classes, idx % self.num_classes
        boxes = decode(box[0][anchor_idx], self.anchors[anchor_idx]).clamp(min=0)
        boxes = torch.minimum(boxes, image_hw.flip(0).repeat(2))  # x <= width, y <= height
        scores = logits.sigmoid()
        keep = scores > self.score_threshold
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        # per-class NMS in one call, torchvision's coordinate trick written out: classes are moved apart by more
        # than the input size. torchvision's batched_nms exports it inside an If ("no boxes"), whose branches
        # NNCF quantizes and compiles separately (3x the int8 export time) -- the If adds nothing here.
        shifted = boxes + (labels.to(boxes.dtype) * (self.resolution + 1))[:, None]
        keep = nms(shifted, scores, self.iou_threshold)[: self.max_detections]
        return boxes[keep], scores[keep], labels[keep]


class RawDetector(nn.Module):
    """The raw outputs as a flat tuple: class P3..P7 then box P3..P7 (ONNX outputs are tensors, not lists)."""

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


def _real_inputs(config, resolution: int, images: list[str | os.PathLike] | None) -> list[torch.Tensor]:
    return [x for x, _ in _real_pairs(config, resolution, images)]


def _real_pairs(config, resolution: int, images) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(letterboxed image (1, 3, S, S), its own (height, width) in input pixels) for real photos."""
    if not images:
        import skimage.data
        from PIL import Image

        pils = []
        for name in ("astronaut", "chelsea", "coffee"):  # square centre crops: no letterbox padding
            im = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            pils.append(im.crop((left, top, left + side, top + side)))
    else:
        pils = [load_image(p) for p in images]
    out = []
    for im in pils:
        x, scale = detection_eval_image(im, config.mean, config.std, resolution)
        out.append((x[None], torch.tensor([im.height * scale, im.width * scale], dtype=torch.float32)))
    return out


def _reference(model: nn.Module, x: torch.Tensor, hw: torch.Tensor, score_threshold: float):
    """The PyTorch path's detections for one letterboxed image (boxes in input pixels)."""
    class_out, box_out = model(x)
    cls, box = flatten_outputs(class_out, box_out, model.config.num_classes)
    anchors = anchors_for(model.config, x.shape[-2], x.shape[-1])
    return postprocess(cls, box, anchors, tuple(x.shape[-2:]), score_threshold=score_threshold,
                       clip_sizes=[tuple(hw.tolist())])[0]


def _match(boxes, scores, classes, want, tolerance: float) -> tuple[float, float, bool]:
    """Pair each runtime detection with a PyTorch one of the same class and score (NMS may order exact ties
    differently); (max box diff, max score diff, every detection paired)."""
    wb, ws, wc = want.boxes.numpy(), want.scores.numpy(), want.labels.numpy()
    if len(scores) != len(ws):
        return float("inf"), float("inf"), False
    free = np.ones(len(ws), dtype=bool)
    box_diff = score_diff = 0.0
    for b, s, c in zip(boxes, scores, classes):
        cand = np.flatnonzero(free & (wc == c) & (np.abs(ws - s) <= tolerance))
        if cand.size == 0:
            return float("inf"), float("inf"), False
        j = cand[np.abs(wb[cand] - b).max(axis=1).argmin()]
        free[j] = False
        box_diff = max(box_diff, float(np.abs(wb[j] - b).max()))
        score_diff = max(score_diff, float(abs(ws[j] - s)))
    return box_diff, score_diff, True


def _compare(outputs: list, expected: list, end_to_end: bool, tolerance: float) -> tuple[float, float, bool]:
    box_diff = score_diff = 0.0
    for got, want in zip(outputs, expected):
        if end_to_end:
            b, s, ok = _match(*got, want, tolerance)
            if not ok:
                return b, s, False
            box_diff, score_diff = max(box_diff, b), max(score_diff, s)
        else:
            box_diff = max(box_diff, max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want)))
    return box_diff, score_diff, True


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
    pairs = _real_pairs(model.config, res, images)
    inputs = [x for x, _ in pairs]
    feeds = [{"image": x.numpy()} if raw else {"image": x.numpy(), "image_hw": hw.numpy()} for x, hw in pairs]
    with torch.no_grad():
        if raw:
            expected = [[t for t in wrapper(x)] for x in inputs]
        else:
            expected = [_reference(model, x, hw, wrapper.score_threshold) for x, hw in pairs]
    names = ["boxes", "scores", "classes"] if not raw else (
        [f"class_p{i}" for i in range(3, 8)] + [f"box_p{i}" for i in range(3, 8)])
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (inputs[0],) if raw else pairs[0], str(tmp_path), input_names=list(feeds[0]),
                              output_names=names, opset_version=17, dynamo=False)
        session = ort_session(str(tmp_path))
        outputs = [session.run(None, feed) for feed in feeds]
        box_tolerance = tolerance if raw else tolerance * max(1.0, res / 100)
        box_diff, score_diff, same = _compare(outputs, expected, not raw, tolerance)
        if not same or box_diff > box_tolerance or score_diff > tolerance:
            raise ExportError(f"ONNX Runtime disagrees with PyTorch on real images (same detections: {same}, max box "
                              f"diff {box_diff:.3g}, max score diff {score_diff:.3g}); nothing written")
        ov_checked = (_check_openvino(tmp_path, feeds, outputs, expected, not raw, tolerance, box_tolerance)
                      if check_openvino else False)
        data = tmp_path.read_bytes()
    atomic_write(path, lambda p: Path(p).write_bytes(data))
    return DetectorExportReport(str(path), not raw, len(inputs), box_diff, score_diff, same, ov_checked)


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
        box_diff, score_diff, same = _compare([got], [ref], end_to_end, tolerance)
        if not same or box_diff > box_tolerance or score_diff > tolerance:
            raise ExportError(f"OpenVINO disagrees with PyTorch on {path.name} (same detections: {same}, max box "
                              f"diff {box_diff:.3g}, max score diff {score_diff:.3g}); nothing written")
    return True


# ---------------------------------------------------------------------------------------------- OpenVINO, engines

def _calibration_batch(config, resolution: int, calibration: str, limit: int = 64) -> list[dict]:
    """The graph's inputs for real images from ``calibration`` (the detector's own preprocessing), for NNCF."""
    from ..data import check_image

    files = [p for p in sorted(Path(calibration).rglob("*")) if p.is_file() and check_image(p) is None][:limit]
    if not files:
        raise UsageError(f"{calibration}: no readable images to calibrate int8 on")
    return [{"image": x.numpy(), "image_hw": hw.numpy()} for x, hw in _real_pairs(config, resolution, files)]


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
    return report, agreement


def _write_ir(onnx_path: Path, path: str | os.PathLike, config, resolution: int, int8: bool,
              calibration: str | None, images=None) -> dict:
    """The verified end-to-end ONNX graph as OpenVINO IR at ``path`` (.xml + .bin), int8 by NNCF when asked."""
    from ..deploy.openvino import compile_ir, quantize_int8, require_openvino, save_ir

    ov_model = require_openvino().convert_model(str(onnx_path))
    agreement = {}
    if int8:
        fp32 = compile_ir(ov_model)
        ov_model = quantize_int8(ov_model, _calibration_batch(config, resolution, calibration))
        agreement = _int8_agreement(fp32, compile_ir(ov_model), _real_pairs(config, resolution, images))
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


def box_agreement(pairs) -> dict:
    """(fp32 boxes, int8 boxes) per image -> detections each found, and the share of fp32's that int8 also finds
    (IoU >= 0.5)."""
    from torchvision.ops import box_iou

    found = kept = n8 = 0
    for ba, bb in pairs:
        found, n8 = found + len(ba), n8 + len(bb)
        if len(ba) and len(bb):
            kept += int((box_iou(ba, bb).max(dim=1).values >= 0.5).sum())
    return dict(fp32_detections=found, int8_detections=n8, fp32_kept_by_int8=kept / max(found, 1))


class EndToEndEngine:
    """The exported end-to-end graph behind :class:`effnet.detect.Predictor`: one image at a time (the graph's
    batch is 1) with its own (height, width), the graph's 0.05 score threshold raised to the caller's."""

    def __init__(self, run, max_detections: int) -> None:
        self.run, self.max_detections = run, max_detections

    def __call__(self, x: torch.Tensor, valid: torch.Tensor, score_threshold: float) -> list[tuple]:
        out = []
        for image, hw in zip(x, valid):
            feed = {"image": image[None].numpy(), "image_hw": hw.numpy()}
            boxes, scores, labels = (torch.from_numpy(np.asarray(t)) for t in self.run(feed))
            keep = scores > score_threshold
            out.append((boxes[keep][: self.max_detections].float(), scores[keep][: self.max_detections].float(),
                        labels[keep][: self.max_detections].long()))
        return out


def end_to_end_engine(model: nn.Module, backend: str, calibration: str | None = None, threads: int | None = None,
                      max_detections: int = 100) -> EndToEndEngine:
    """``model``'s end-to-end graph for ``backend`` (onnx, openvino, openvino-int8), exported and verified once
    into the cache (keyed by weights, config and calibration images), then run."""
    from ..deploy.predictors import _cache_path

    int8 = backend.endswith("-int8")
    if int8 and not calibration:
        raise UsageError(f"--backend {backend} needs --calibration DIR (real images to calibrate int8 on)")
    onnx_path = _cache_path(model, "detect-onnx", "fp32", None, "onnx")
    if not onnx_path.exists():  # every backend starts from the one verified ONNX graph
        export_detector(model, onnx_path)
    if backend == "onnx":
        from ..deploy.ort import ort_session

        session = ort_session(str(onnx_path), threads, spinning=threads is None)
        return EndToEndEngine(lambda feed: session.run(None, feed), max_detections)
    from ..deploy.openvino import compile_ir

    path = _cache_path(model, "detect-openvino", "int8" if int8 else "fp32", calibration if int8 else None, "xml")
    if not path.exists():
        _write_ir(onnx_path, path, model.config, model.config.resolution, int8, calibration)
    compiled = compile_ir(str(path), "fp32", threads)
    return EndToEndEngine(lambda feed: [v for v in compiled(feed).values()], max_detections)
