"""Exporting a classifier (``effnet export``): the shared verified export (:func:`effnet.deploy.export_model`: ONNX,
OpenVINO IR or TorchScript, checked against PyTorch on random and real images, optional int8) behind the options
object both tasks take."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..deploy.export import export_model
from ..deploy.options import HUB, Exported, ExportOptions
from ..errors import UsageError
from ..models.hf import load_hub_model, save_pretrained


@contextlib.contextmanager
def _image_folder(options: ExportOptions):
    """The folder of real images to check (and calibrate int8) on: ``calibration``, else links to ``images``."""
    if options.calibration or not options.images:
        yield options.calibration
        return
    with tempfile.TemporaryDirectory(prefix="effnet-images-") as tmp:
        for i, path in enumerate(options.images):
            os.symlink(os.path.abspath(path), os.path.join(tmp, f"{i:05d}{Path(path).suffix}"))
        yield tmp


def export_classifier(model: nn.Module, options: ExportOptions) -> Exported:
    if options.raw:
        raise UsageError("--raw is for detectors (their per-level outputs); a classifier exports its logits")
    if options.format == HUB:
        return _export_hub(model, options)
    with _image_folder(options) as images:
        r = export_model(model, options.output, options.format, options.batch, options.resolution, options.int8,
                         images, options.tolerance)
    real = f", real images ({r.real_images}) {r.max_abs_diff_real:.2e}" if r.real_images else ""
    lines = [f"wrote {r.path} ({r.format}{', int8' if r.int8 else ''}); parity vs PyTorch: "
             f"max |logit diff| random {r.max_abs_diff_random:.2e}{real}"]
    if r.int8:
        conf = (f"; {r.top1_agreement_confident:.1%} on the {r.confident_images} where fp32 is confident"
                if r.top1_agreement_confident is not None else "")
        lines.append(f"int8 top-1 agreement with fp32 on {r.real_images} real images: {r.top1_agreement:.1%}{conf}")
    return Exported(lines, dict(r.__dict__))


@torch.inference_mode()
def _export_hub(model: nn.Module, options: ExportOptions) -> Exported:
    """A Hugging Face Hub folder in timm's layout, read back through timm's naming and checked against ``model``."""
    if options.int8:
        raise UsageError("--int8 is for runtime graphs (onnx, openvino, executorch); a Hub folder keeps fp32 weights")
    folder = save_pretrained(model, options.output)
    x = torch.randn(2, model.config.in_chans, model.config.resolution, model.config.resolution)
    diff = (load_hub_model(f"local-dir:{folder}")(x) - model.eval()(x)).abs().max().item()
    if diff > options.tolerance:
        raise UsageError(f"{folder}: the reloaded folder differs from the model by {diff:.2e}")
    return Exported([f"wrote {folder}/ (Hugging Face Hub folder: config.json + model.safetensors in timm's naming; "
                     f"timm.create_model('local-dir:{folder}', pretrained=True)); reloaded max |logit diff| {diff:.2e}"],
                    {"path": str(folder), "format": HUB, "max_abs_diff_random": diff})
