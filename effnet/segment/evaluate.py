"""Evaluating a segmenter: mean IoU, per-class IoU, pixel accuracy and the confusion matrix over a val split, on
PyTorch or an exported backend.

Images and masks are letterboxed to the model's input size as :class:`~effnet.data.masks.SegmentationSamples`
does for evaluation (the mask resized by nearest neighbour, its padding ``IGNORE_INDEX``), so every image is scored
at the resolution the model sees and the padding is never counted.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..data.masks import SegmentationSamples, SegmentationSplit
from ..deploy.predictors import at_resolution, with_backend
from .export import LOGITS
from .metrics import confusion, scores


def eval_loader(split: SegmentationSplit, config, resolution: int, batch_size: int, workers: int = 0):
    ds = SegmentationSamples(split, config.mean, config.std, resolution, train=False)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)


def forward(model: nn.Module, x: torch.Tensor, amp: bool = False, channels_last: bool = False) -> torch.Tensor:
    """Logits of a batch (bf16 autocast and channels_last as training runs them)."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        return model(x).float()


@torch.inference_mode()
def evaluate_segmenter(model: nn.Module, split: SegmentationSplit, resolution: int | None = None,
                       batch_size: int = 8, workers: int = 0, amp: bool = False, channels_last: bool = False,
                       backend: str = "torch", calibration: str | None = None) -> dict:
    """Scores of ``model`` on ``split`` (:func:`effnet.segment.metrics.scores`) plus the confusion matrix and
    images/s (the forward pass alone). ``backend`` other than ``torch`` scores the graph exported at
    ``resolution`` (:func:`effnet.deploy.predictors.with_backend`); an int8 one is calibrated on ``calibration``,
    else on the split's own images."""
    was_training = model.training
    model.eval()
    resolution = at_resolution(model, resolution).config.resolution  # an exported graph's fixed input size
    runner = model if backend == "torch" else _engine(model, split, backend, calibration)
    names = model.config.class_names or tuple(f"class_{i}" for i in range(model.config.num_classes))
    matrix = torch.zeros(len(names), len(names), dtype=torch.long)
    seconds, images = 0.0, 0
    for x, target in eval_loader(split, model.config, resolution, batch_size, workers):
        t0 = time.perf_counter()
        logits = forward(runner, x, amp, channels_last) if backend == "torch" else runner(x).float()
        seconds += time.perf_counter() - t0
        images += x.shape[0]
        matrix += confusion(logits.argmax(1), target, len(names))
    model.train(was_training)
    return dict(scores(matrix, names), confusion=matrix.tolist(), images=images,
                images_per_s=images / max(seconds, 1e-9), backend=backend)


def _engine(model: nn.Module, split: SegmentationSplit, backend: str, calibration: str | None) -> nn.Module:
    if calibration or not backend.endswith("-int8"):
        return with_backend(model, backend, calibration, outputs=LOGITS)
    return with_backend(model, backend, images=[image for image, _ in split.samples[:64]], outputs=LOGITS)
