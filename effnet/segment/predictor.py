"""``effnet.segment.Predictor``: images of any size in, one class-index mask per image out, in that image's pixels.

Each image is letterboxed to the model's input size (long side to ``resolution``, padded at the bottom and right:
the work an image can cause is bounded by the model's size, not the image's), the batch runs as one forward pass,
the logits of the image's own region are resized back to the image's height and width (bilinear) and the mask is
their argmax. ``backend`` other than ``torch`` runs the model exported once, verified and cached
(:func:`effnet.deploy.predictors.with_backend`: ONNX Runtime, OpenVINO fp32 / int8, ExecuTorch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF
from PIL import Image
from torch import nn

from ..data.masks import letterbox_image
from ..deploy.predictors import BACKENDS, at_resolution, with_backend
from ..errors import UsageError
from .export import LOGITS
from ..results import label_names

SEGMENT_BACKENDS = BACKENDS  # every classifier engine runs a segmenter: its graph is convolutions and resizes


def _as_tensor(image) -> torch.Tensor:
    """A CHW image: uint8 from a PIL image (resized as evaluation resizes a file), or a float tensor in [0, 1]."""
    if isinstance(image, Image.Image):
        return TF.pil_to_tensor(image.convert("RGB"))
    if isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] == 3 and image.is_floating_point():
        return image.float().clamp(0, 1)
    raise UsageError("Predictor takes PIL images or CHW float tensors in [0, 1] with 3 channels; got "
                     f"{type(image).__name__}{tuple(image.shape) if isinstance(image, torch.Tensor) else ''}")


def preprocess(config, images: Sequence, resolution: int | None = None):
    """The letterboxed batch (:func:`effnet.data.masks.letterbox_image`), each image's (height, width) and the
    region it covers in the batch."""
    res = resolution or config.resolution
    xs, sizes, regions = [], [], []
    for image in map(_as_tensor, images):
        x, region = letterbox_image(image, config.mean, config.std, res)
        xs.append(x)
        sizes.append(tuple(image.shape[-2:]))
        regions.append(region)
    return torch.stack(xs), sizes, regions


def masks_from_logits(logits: torch.Tensor, sizes: Sequence[tuple[int, int]],
                      regions: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """One uint8 / int64 class-index mask per image: its region's logits resized to its own size, argmax."""
    out = []
    for y, (h, w), (rh, rw) in zip(logits.float(), sizes, regions):
        y = F.interpolate(y[None, :, :rh, :rw], size=(h, w), mode="bilinear", align_corners=False)[0]
        mask = y.argmax(0)
        out.append(mask.to(torch.uint8 if y.shape[0] <= 256 else torch.int64).numpy())
    return out


class Predictor:
    """Masks for a list of images (see the module docstring). ``Predictor(model)(images)`` returns one dict per
    image: ``mask`` (H, W) class indices in the image's own pixels, ``classes`` the indices present,
    ``names`` their names, ``pixels`` how many pixels each covers."""

    def __init__(self, model: nn.Module, backend: str = "torch", calibration: str | None = None,
                 threads: int | None = None, resolution: int | None = None, images: Sequence[str] = ()) -> None:
        if backend not in ("auto", *SEGMENT_BACKENDS):
            raise UsageError(f"unknown segmenter backend {backend!r} (auto, {', '.join(SEGMENT_BACKENDS)})")
        if resolution not in (None, model.config.resolution):
            if resolution % 32:
                raise UsageError(f"--resolution must be a multiple of 32 for a segmenter, got {resolution}")
            at_resolution(model, resolution)  # exports are keyed by the config
        self.model, self.config, self.backend = model.eval(), model.config, backend
        self.class_names = label_names(self.config.class_names, self.config.num_classes)
        self.runner = with_backend(self.model, backend, calibration, list(images), threads, outputs=LOGITS)

    def preprocess(self, images: Sequence):
        return preprocess(self.config, images)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for a preprocessed batch (N, classes, R, R)."""
        return self.runner(x)

    def __call__(self, images: Sequence) -> list[dict]:
        if isinstance(images, (Image.Image, torch.Tensor)):
            images = [images]
        if not images:
            return []
        x, sizes, regions = self.preprocess(images)
        return [self.describe(mask) for mask in masks_from_logits(self.logits(x), sizes, regions)]

    def describe(self, mask: np.ndarray) -> dict:
        classes, counts = np.unique(mask, return_counts=True)
        return dict(mask=mask, classes=classes.tolist(), names=[self.class_names[int(c)] for c in classes],
                    pixels=counts.tolist())
