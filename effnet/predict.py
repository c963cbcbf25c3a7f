"""Classify image files with a model and its own preprocessing."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .data import ImageLoadError, eval_transform, load_image
from .imagenet import class_names_for


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), best first


def build_model_for_inference(
    model: str | None, weights: str | None = None, pretrained: bool = False, source: str = "auto"
) -> nn.Module:
    """A model from a name (+ pretrained), an effnet .safetensors file, or a name + foreign weights file."""
    from .registry import create_model
    from .weights import is_effnet_file, load, load_weights

    if weights:
        if is_effnet_file(weights):  # our own file carries its config
            return load(weights).eval()
        if model is None:
            raise ValueError(f"{weights}: a foreign checkpoint needs --model NAME to know the architecture")
        return load_weights(create_model(model), weights, source=source).eval()
    if model is None:
        raise ValueError("give --model NAME (with --pretrained or --weights FILE)")
    return create_model(model, pretrained=pretrained).eval()


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
