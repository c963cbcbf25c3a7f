"""What every detector export is checked on before its file is kept, and how: real photos letterboxed as the
detector sees them (:func:`real_pairs`, :func:`calibration_batch`), runtime detections paired with PyTorch's
(:func:`match_detections`, :func:`compare_detections`), and how far int8's boxes stray from fp32's
(:func:`box_agreement`). Shared by the ONNX / OpenVINO export (:mod:`.export`) and ExecuTorch's (:mod:`.executorch`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..data import load_image
from ..data.coco import detection_eval_image
from ..errors import UsageError


def real_pairs(config, resolution: int, images) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(letterboxed image (1, 3, S, S), its own (height, width) in input pixels) for real photos: ``images``, or
    square centre crops of three of scikit-image's (no letterbox padding)."""
    if not images:
        import skimage.data
        from PIL import Image

        pils = []
        for name in ("astronaut", "chelsea", "coffee"):
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


def calibration_batch(config, resolution: int, calibration: str | os.PathLike, limit: int = 64) -> list[dict]:
    """The end-to-end graph's inputs (``image``, ``image_hw``) for real images from the folder ``calibration`` (the
    detector's own preprocessing): what int8 is calibrated on."""
    from ..data import check_image

    files = [p for p in sorted(Path(calibration).rglob("*")) if p.is_file() and check_image(p) is None][:limit]
    if not files:
        raise UsageError(f"{calibration}: no readable images to calibrate int8 on")
    return [{"image": x.numpy(), "image_hw": hw.numpy()} for x, hw in real_pairs(config, resolution, files)]


def match_detections(boxes, scores, classes, want, tolerance: float) -> tuple[float, float, bool]:
    """Pair each runtime detection (numpy ``boxes``, ``scores``, ``classes``) with a PyTorch one (``want``:
    :class:`~effnet.detect.boxes.Detections`) of the same class and score -- NMS may order exact ties
    differently; (max box diff, max score diff, every detection paired)."""
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


def compare_detections(outputs: list, expected: list, end_to_end: bool, tolerance: float) -> tuple[float, float, bool]:
    """A runtime's outputs per image vs PyTorch's: end to end, detections paired (:func:`match_detections`); raw,
    the largest difference of any output."""
    box_diff = score_diff = 0.0
    for got, want in zip(outputs, expected):
        if end_to_end:
            b, s, ok = match_detections(*got, want, tolerance)
            if not ok:
                return b, s, False
            box_diff, score_diff = max(box_diff, b), max(score_diff, s)
        else:
            box_diff = max(box_diff, max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want)))
    return box_diff, score_diff, True


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
