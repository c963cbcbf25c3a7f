"""A classifier behind ``effnet serve`` (``POST /predict``): the :class:`~effnet.deploy.engines.ServedModel` of the
classify task, on any inference backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..data import eval_transform
from ..deploy.engines import Engines, build_engines
from ..models.imagenet import class_names_for


@dataclass
class Classifier:
    """An image classifier with its own preprocessing (resolution, crop, mean/std from its config)."""

    engines: Engines
    name: str
    backend: str
    kind: str = "classify"

    def __post_init__(self) -> None:
        config = self.engines.first.config
        self.labels = class_names_for(config)
        self.transform = eval_transform(config)

    def preprocess(self, image: Image.Image, **options: Any) -> torch.Tensor:
        return self.transform(image)

    @torch.inference_mode()
    def run_batch(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Class probabilities for each input, computed as one batch."""
        return list(self.engines.get()(torch.stack(inputs)).float().softmax(-1))

    def answer(self, probs: torch.Tensor, topk: int = 5) -> dict:
        values, indices = probs.topk(min(topk, len(self.labels)))
        return {"predictions": [{"label": self.labels[i], "index": i, "score": round(v, 6)}
                                for v, i in zip(values.tolist(), indices.tolist())]}


def served_classifier(model: nn.Module, backend: str = "auto", calibration: str | None = None, copies: int = 1,
                      threads: int | None = None) -> Classifier:
    """``model`` behind ``backend`` with ``copies`` engines of ``threads`` threads, one per inference thread."""
    engines = build_engines(model, backend, calibration, copies, threads)
    if backend == "auto":  # say which runtime "auto" picked
        backend = f"auto ({type(engines[0]).__name__})"
    return Classifier(Engines(engines), name=model.config.name, backend=backend)
