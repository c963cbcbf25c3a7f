"""Class activation maps of a classifier on one photo, in the photo's own pixel frame (torchcam does the maps).

The model sees a centre crop of the photo resized to its resolution (``effnet.data.eval_transform``); the map
is computed on that crop, upsampled, and pasted back where the crop came from, so it lines up with the photo
(outside the crop it is zero: the model never saw those pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import eval_transform
from ..errors import UsageError
from ..extras import install_hint
from ..models.zoo.imagenet import class_names_for
from .options import DEFAULT_LAYER, METHODS

@dataclass(frozen=True)
class Explanation:
    """A heat map (H x W of the photo, values in [0, 1]) for one class, and what the model predicted."""

    heatmap: np.ndarray
    class_index: int
    class_name: str
    probability: float  # the model's softmax probability of that class
    predicted: int  # the model's top-1 class
    method: str
    layer: str

    @property
    def peak(self) -> tuple[int, int]:
        """(x, y) of the map's maximum, in photo pixels."""
        y, x = np.unravel_index(int(np.argmax(self.heatmap)), self.heatmap.shape)
        return int(x), int(y)


def crop_box(size: tuple[int, int], resolution: int, crop_pct: float) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in photo pixels of what ``eval_transform`` keeps: the short side resized to
    ``resolution / crop_pct``, then a centred ``resolution`` square."""
    w, h = size
    scale = math.floor(resolution / crop_pct) / min(w, h)
    side = resolution / scale
    left, top = (w - side) / 2, (h - side) / 2
    return left, top, left + side, top + side


def _extractor(method: str, model: nn.Module, layer: str, resolution: int):
    if method not in METHODS:
        raise UsageError(f"unknown --method {method!r} ({', '.join(METHODS)})")
    try:
        import torchcam.methods as methods
    except ImportError:
        raise UsageError(f"effnet explain {install_hint('torchcam')}") from None
    names = dict(model.named_modules())
    if layer not in names:
        # the model's own last stages: V1 has seven (blocks.6 last), V2-S six, V2-M/L/XL seven
        stages = [name for name in names if name.startswith("blocks.") and name.count(".") == 1]
        examples = ", ".join([DEFAULT_LAYER, *stages[:-3:-1]])
        raise UsageError(f"no layer {layer!r} in {model.config.name} (e.g. {examples})")
    return getattr(methods, METHODS[method])(model, target_layer=layer, input_shape=(3, resolution, resolution))


def explain(model: nn.Module, photo: Image.Image, class_index: int | None = None, method: str = "gradcam",
            layer: str = DEFAULT_LAYER) -> Explanation:
    """The ``method`` map of ``class_index`` (default: the model's top-1) at ``layer``, in photo pixels."""
    config = model.config
    names = class_names_for(config)
    if class_index is not None and not 0 <= class_index < len(names):
        raise UsageError(f"--class {class_index}: the model has classes 0..{len(names) - 1}")
    model.eval()
    x = eval_transform(config)(photo).unsqueeze(0)
    with _extractor(method, model, layer, config.resolution) as extractor, torch.enable_grad():
        scores = model(x)
        predicted = int(scores.argmax(1))
        k = predicted if class_index is None else class_index
        cam = extractor(class_idx=k, scores=scores)[0][0].detach().float()
    prob = float(scores.detach().softmax(1)[0, k])
    return Explanation(_to_photo(cam, photo.size, config.resolution, config.crop_pct), k, names[k], prob,
                       predicted, method, layer)


def _to_photo(cam: torch.Tensor, size: tuple[int, int], resolution: int, crop_pct: float) -> np.ndarray:
    """Upsample the crop's map (bilinear) and paste it into a zero map of the photo's size."""
    left, top, right, bottom = crop_box(size, resolution, crop_pct)
    w, h = size
    x0, y0, x1, y1 = (int(round(v)) for v in (left, top, right, bottom))
    out = np.zeros((h, w), dtype=np.float32)
    up = torch.nn.functional.interpolate(cam[None, None], size=(y1 - y0, x1 - x0), mode="bilinear",
                                         align_corners=False)[0, 0].clamp(0, 1).numpy()
    # the crop may reach a pixel past the photo's edge by rounding
    ys, xs = slice(max(y0, 0), min(y1, h)), slice(max(x0, 0), min(x1, w))
    out[ys, xs] = up[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return out


def overlay(photo: Image.Image, heatmap: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The map in the jet colormap blended over the photo (torchcam's ``overlay_mask``)."""
    from torchcam.utils import overlay_mask

    mask = Image.fromarray(heatmap.astype(np.float32), mode="F")
    return overlay_mask(photo.convert("RGB"), mask, alpha=alpha)
