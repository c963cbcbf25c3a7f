"""Exporting a segmenter (``effnet export``): the shared verified export (:func:`effnet.deploy.export.export_model`:
ONNX, OpenVINO IR, TorchScript or ExecuTorch, checked against PyTorch on random and real images before the file is
kept; int8 for onnx / openvino / executorch). The graph takes the model's letterboxed input, a square
``config.resolution`` (a multiple of 32), and returns its logits ``(N, classes, H, W)``; int8 is judged by how many
pixels keep fp32's class."""

from __future__ import annotations

import numpy as np
from torch import nn

from ..deploy.export import ExportOutputs, export_model
from ..deploy.options import HUB, Exported, ExportOptions, image_folder
from ..errors import UsageError
from ..models.nets.segmenter_config import OUTPUT_STRIDE


def pixel_agreement(fp32_logits: np.ndarray, int8_logits: np.ndarray) -> dict:
    """int8's agreement with fp32 on (N, C, H, W) logits: the fraction of pixels whose argmax class is the same,
    over every pixel, and the lowest of any one image (a mask that int8 ruins shows there, not in the mean)."""
    agree = fp32_logits.argmax(1) == int8_logits.argmax(1)  # (N, H, W)
    per_image = agree.reshape(len(agree), -1).mean(1)
    return {"pixel_agreement": float(agree.mean()), "pixel_agreement_min_image": float(per_image.min())}


LOGITS = ExportOutputs(name="logits", what="logit", agreement=pixel_agreement)  # a segmenter's exported output
STATIC = "static"  # batch axis: ExecuTorch programs are batch 1, and a fixed shape is what edge runtimes want
TOLERANCE = 1e-3  # the largest |logit diff| vs PyTorch an fp32 export may show (the classifier's default)


def export_segmenter(model: nn.Module, options: ExportOptions) -> Exported:
    """``model`` exported in ``options.format`` at ``options.resolution`` (default: the model's), verified; the lines
    ``effnet export`` prints (parity, and int8's pixel agreement) and the report."""
    if options.format == HUB:
        raise UsageError("--format hub writes a classifier in timm's Hub layout; a segmenter exports to onnx, "
                         "openvino, torchscript or executorch")
    resolution = options.resolution or model.config.resolution
    if resolution % OUTPUT_STRIDE:
        raise UsageError(f"--resolution must be a multiple of {OUTPUT_STRIDE} for a segmenter, got {resolution}")
    with image_folder(options) as images:
        r = export_model(model, options.output, options.format, STATIC, resolution, options.int8, images, TOLERANCE,
                         outputs=LOGITS)
    real = f", real images ({r.real_images}) {r.max_abs_diff_real:.2e}" if r.real_images else ""
    lines = [f"wrote {r.path} ({r.format}{', int8' if r.int8 else ''}, {resolution}x{resolution} input); parity vs "
             f"PyTorch: max |logit diff| random {r.max_abs_diff_random:.2e}{real}"]
    if r.int8:
        a = r.agreement
        lines.append(f"int8 pixel agreement with fp32 on {r.real_images} real images: {a['pixel_agreement']:.1%} "
                     f"(lowest image {a['pixel_agreement_min_image']:.1%})")
    return Exported(lines + r.notes, r.as_dict())
