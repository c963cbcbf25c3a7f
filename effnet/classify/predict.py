"""Classify image files with a model and its own preprocessing."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..data import eval_transform, load_image
from ..errors import ImageLoadError
from ..models.imagenet import class_names_for


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), best first


@torch.inference_mode()
def predict_files(
    model: nn.Module, paths: list[str | os.PathLike], topk: int = 5, batch_size: int = 16
) -> tuple[list[Prediction], list[str]]:
    """Top-k predictions for each readable image; unreadable files give one error line each."""
    config = model.config
    names = class_names_for(config)
    transform = eval_transform(config)
    model.eval()
    results: list[Prediction] = []
    errors: list[str] = []
    good: list[tuple[str, torch.Tensor]] = []
    for p in paths:
        try:
            good.append((str(p), transform(load_image(p))))
        except ImageLoadError as exc:
            errors.append(str(exc))
    k = min(topk, len(names))
    for start in range(0, len(good), batch_size):
        chunk = good[start:start + batch_size]
        probs = model(torch.stack([t for _, t in chunk])).softmax(-1)
        values, indices = probs.topk(k, dim=-1)
        for (path, _), v, i in zip(chunk, values.tolist(), indices.tolist()):
            results.append(Prediction(path, [(names[j], float(q)) for q, j in zip(v, i)]))
    return results, errors
