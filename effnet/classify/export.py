"""Exporting a classifier (``effnet export``): the shared verified export (:func:`effnet.deploy.export_model`: ONNX,
OpenVINO IR or TorchScript, checked against PyTorch on random and real images, optional int8) behind the options
object both tasks take."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..deploy.export import ExportOutputs, export_model
from ..deploy.options import HUB, Exported, ExportOptions, image_folder
from ..errors import UsageError
from ..taskspec import Flag
from ..models.zoo.hf_hub import load_hf_hub_model, save_pretrained


def top1_agreement(fp32_logits: np.ndarray, int8_logits: np.ndarray) -> dict:
    """int8's top-1 agreement with fp32, overall and where fp32's top-1 beats its top-2 by > 0.1 probability."""
    agree = fp32_logits.argmax(1) == int8_logits.argmax(1)
    probs = np.sort(torch.from_numpy(fp32_logits).softmax(1).numpy(), axis=1)
    confident = probs[:, -1] - probs[:, -2] > 0.1
    return {"top1_agreement": float(agree.mean()), "confident_images": int(confident.sum()),
            "top1_agreement_confident": float(agree[confident].mean()) if confident.any() else None}


LOGITS = ExportOutputs(name="logits", what="logit", agreement=top1_agreement)  # a classifier's exported output

# the classifier's own flags of `effnet export` (in ExportOptions.settings)
EXPORT_FLAGS = (
    Flag("--batch", "classifiers: a static or dynamic batch axis", default="static", options={"choices": ["static", "dynamic"]}),
    Flag("--tolerance", "classifiers: the largest |logit diff| allowed vs PyTorch", default=1e-3, options={"type": float}),
)


def export_classifier(model: nn.Module, options: ExportOptions) -> Exported:
    if options.format == HUB:
        return _export_hub(model, options)
    with image_folder(options) as images:
        r = export_model(model, options.output, options.format, options.setting("batch", "static"), options.resolution,
                         options.int8, images, options.setting("tolerance", 1e-3), outputs=LOGITS)
    real = f", real images ({r.real_images}) {r.max_abs_diff_real:.2e}" if r.real_images else ""
    lines = [f"wrote {r.path} ({r.format}{', int8' if r.int8 else ''}); parity vs PyTorch: "
             f"max |logit diff| random {r.max_abs_diff_random:.2e}{real}"]
    if r.int8:
        a = r.agreement
        conf = (f"; {a['top1_agreement_confident']:.1%} on the {a['confident_images']} where fp32 is confident"
                if a["top1_agreement_confident"] is not None else "")
        lines.append(f"int8 top-1 agreement with fp32 on {r.real_images} real images: {a['top1_agreement']:.1%}{conf}")
    return Exported(lines + r.notes, r.as_dict())


@torch.inference_mode()
def _export_hub(model: nn.Module, options: ExportOptions) -> Exported:
    """A Hugging Face Hub folder in timm's layout, read back through timm's naming and checked against ``model``."""
    if options.int8:
        raise UsageError("--int8 is for runtime graphs (onnx, openvino, executorch); a Hub folder keeps fp32 weights")
    folder = save_pretrained(model, options.output)
    x = torch.randn(2, model.config.in_chans, model.config.resolution, model.config.resolution)
    diff = (load_hf_hub_model(f"local-dir:{folder}")(x) - model.eval()(x)).abs().max().item()
    if diff > options.setting("tolerance", 1e-3):
        raise UsageError(f"{folder}: the reloaded folder differs from the model by {diff:.2e}")
    return Exported([f"wrote {folder}/ (Hugging Face Hub folder: config.json + model.safetensors in timm's naming; "
                     f"timm.create_model('local-dir:{folder}', pretrained=True)); reloaded max |logit diff| {diff:.2e}"],
                    {"path": str(folder), "format": HUB, "max_abs_diff_random": diff})
