"""Exporting a segmenter (``effnet export``): the shared verified export (:func:`effnet.deploy.export.export_model`:
ONNX, OpenVINO IR, TorchScript or ExecuTorch, checked against PyTorch on random and real images before the file is
kept; int8 for onnx / openvino / executorch). The graph takes the model's letterboxed input, a square
``config.resolution`` (a multiple of 32), and returns its logits ``(N, classes, H, W)``; int8 is judged by how many
pixels keep fp32's class."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..deploy.export import ExportOutputs, export_model
from ..deploy.options import HUB, Exported, ExportOptions, image_folder
from ..errors import UsageError
from ..models.nets.segmenter_config import OUTPUT_STRIDE


def pixel_agreement(fp32_logits: np.ndarray, int8_logits: np.ndarray) -> dict:
    """int8's agreement with fp32 on (N, classes, H, W) logits: the fraction of pixels whose argmax class is the
    same, over every pixel and for the worst image (a mask int8 ruins shows there, not in the mean), and over the
    pixels where fp32 is confident -- its top class's probability beats the second's by > 0.1, as the classifier's
    measure (a pixel on the border between two classes flips under any rounding)."""
    agree = fp32_logits.argmax(1) == int8_logits.argmax(1)  # (N, H, W)
    probs = np.sort(torch.from_numpy(fp32_logits).softmax(1).numpy(), axis=1)
    confident = probs[:, -1] - probs[:, -2] > 0.1
    return {"pixel_agreement": float(agree.mean()),
            "pixel_agreement_min_image": float(agree.reshape(len(agree), -1).mean(1).min()),
            "confident_pixels": float(confident.mean()),
            "pixel_agreement_confident": float(agree[confident].mean()) if confident.any() else None}


# a segmenter's exported output; its parity bound is relative: a trained one's logits over noise reach ~1e3
LOGITS = ExportOutputs(name="logits", what="logit", agreement=pixel_agreement, relative=True)
STATIC = "static"  # batch axis: ExecuTorch programs are batch 1, and a fixed shape is what edge runtimes want
# the largest |logit diff| vs PyTorch an fp32 export may show, as a fraction of the largest |logit| (measured on a
# trained U-Net-B0: <= 1e-4 in ONNX Runtime, OpenVINO and ExecuTorch)
TOLERANCE = 1e-3


def export_segmenter(model: nn.Module, options: ExportOptions) -> Exported:
    """``model`` exported in ``options.format`` at ``options.resolution`` (default: the model's), verified; the lines
    ``effnet export`` prints (parity, and int8's pixel agreement) and the report."""
    if options.format == HUB:
        raise UsageError("--format hub writes a classifier in timm's Hub layout; a segmenter exports to onnx, "
                         "openvino, torchscript or executorch")
    resolution = options.resolution or model.config.resolution
    if resolution % OUTPUT_STRIDE:  # the encoder halves the input five times; the Predictor pads any image to it
        where = "--resolution" if options.resolution else f"{model.config.name}'s resolution"
        raise UsageError(f"{where} must be a multiple of {OUTPUT_STRIDE} for a segmenter, got {resolution}")
    with image_folder(options) as images:
        r = export_model(model, options.output, options.format, STATIC, resolution, options.int8, images, TOLERANCE,
                         outputs=LOGITS)
    real = f", real images ({r.real_images}) {r.max_abs_diff_real:.2e}" if r.real_images else ""
    lines = [f"wrote {r.path} ({r.format}{', int8' if r.int8 else ''}, {resolution}x{resolution} input); parity vs "
             f"PyTorch: max |logit diff| random {r.max_abs_diff_random:.2e}{real}"]
    if r.int8:
        a = r.agreement
        conf = (f"; {a['pixel_agreement_confident']:.1%} of the {a['confident_pixels']:.0%} of pixels where fp32 is "
                "confident" if a["pixel_agreement_confident"] is not None else "")
        lines.append(f"int8 pixel agreement with fp32 on {r.real_images} real images: {a['pixel_agreement']:.1%} "
                     f"(lowest image {a['pixel_agreement_min_image']:.1%}{conf})")
    return Exported(lines + r.notes, r.as_dict())
