"""Images in, tensors out: robust image loading and each model's own preprocessing (eval and training)."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import ImageLoadError, UsageError
from ..models.nets.config import ModelConfig


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (RGBA, LA, P, L, CMYK, I;16, I, F, 1) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grayscale: rescale the actual range to 0..255 rather than clipping. One float32 copy,
        # rescaled in place: 4 bytes a pixel beside Pillow's own (float64 with temporaries took ~24)
        arr = np.array(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN / inf in a float image: only the finite range
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            np.nan_to_num(arr, copy=False, nan=lo, posinf=hi, neginf=lo)
        arr -= lo
        arr *= 255.0 / (hi - lo) if hi > lo else 0.0
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # composite on white
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as RGB, or raise :class:`ImageLoadError` naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: no such file") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        reason = str(exc) or type(exc).__name__
        raise ImageLoadError(f"{path}: cannot read image ({reason})") from None


class Contiguous(v2.Transform):
    """The image in C-contiguous (row-major CHW) memory.

    ``v2.ToImage`` wraps a PIL image's HWC pixels as a CHW view without copying (channels-last strides), and
    torchvision's uint8 resize runs on that layout and keeps it, so the transforms' output was a strided view. A
    native runtime that is handed its memory (ExecuTorch's Python runtime reads a tensor as dense) then reads
    pixels in the wrong order: a pretrained Lite0 ``.pte`` called the cat photo class 904 instead of 282, without
    an error. So the copy is made here, once the image has its final size and is still uint8 (a byte a value), and
    the float steps after it run on dense memory. Measured on the 512 x 512 astronaut photo (AMD EPYC, one
    thread): Lite0's eval transform took 0.90 ms returning the view, 0.77 ms with this copy; a bilinear one 0.85
    ms as a view, 0.76 ms copying here, 1.0 ms copying the float output, 1.5 ms copying before the resize."""

    _transformed_types = (tv_tensors.Image,)

    def transform(self, inpt, params):
        return tv_tensors.wrap(inpt.as_subclass(torch.Tensor).contiguous(), like=inpt)


def eval_transform(config: ModelConfig, resolution: int | None = None) -> v2.Compose:
    """Resize the short side to ``resolution / crop_pct``, center-crop ``resolution``, normalise.

    Takes a PIL RGB image, returns a C-contiguous float tensor (3, resolution, resolution).
    """
    res = resolution or config.resolution
    resize = int(math.floor(res / config.crop_pct))
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, interpolation=v2.InterpolationMode(config.interpolation), antialias=True),
        v2.CenterCrop(res),
        Contiguous(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(config.mean), list(config.std)),
    ])


TF_MAX_MAGNITUDE, TORCHVISION_MAX_MAGNITUDE = 10, 30  # each operation's strongest, on either scale


def torchvision_magnitude(tf_magnitude: float) -> int:
    """torchvision's RandAugment magnitude for TensorFlow's ``tf_magnitude``, the scale the EfficientNetV2 paper's
    Table 6 (5-25) and the official code are written in: TF reaches each operation's strongest at 10
    (autoaugment.py ``_MAX_LEVEL``), torchvision at 30, so m is 3m; past the strongest, TF's ops go further (and
    some wrap round), torchvision's stay at their strongest -- which is where this keeps them."""
    scale = TORCHVISION_MAX_MAGNITUDE / TF_MAX_MAGNITUDE
    return min(TORCHVISION_MAX_MAGNITUDE, int(round(tf_magnitude * scale)))


def train_transform(config: ModelConfig, resolution: int, auto_augment: str = "none", scale_min: float = 0.08,
                    hflip: float = 0.5, randaug_magnitude: int = 9) -> v2.Compose:
    """RandomResizedCrop to ``resolution`` + flip (+ AutoAugment / RandAugment), as the paper; PIL in, tensor out.

    RandAugment applies two operations at ``randaug_magnitude``, torchvision's bin of 31 (0-30, 30 = each
    operation's strongest: 30 degrees of rotation, shear 0.3, ...). Progressive learning sets it per stage from the
    paper's magnitudes through :func:`torchvision_magnitude`. The tensor is C-contiguous (:class:`Contiguous`)."""
    ops: list = [v2.ToImage(), v2.RandomResizedCrop(resolution, scale=(scale_min, 1.0), antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if auto_augment == "autoaugment":
        ops.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    elif auto_augment == "randaugment":
        ops.append(v2.RandAugment(num_ops=2, magnitude=randaug_magnitude))
    elif auto_augment != "none":
        raise UsageError(f"unknown auto-augment {auto_augment!r} (none, autoaugment, randaugment)")
    ops += [Contiguous(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(config.mean), list(config.std))]
    return v2.Compose(ops)
