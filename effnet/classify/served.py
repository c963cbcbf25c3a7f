"""A classifier behind ``effnet serve`` (``POST /predict``, and ``/v2/models/{name}/infer`` of the Open Inference
Protocol): the :class:`~effnet.deploy.engines.ServedModel` of the classify task, on any inference backend."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import eval_transform
from ..deploy.engines import Engines, build_engines
from ..models.zoo.imagenet import class_names_for
from ..results import classification
from ..taskspec import TaskSpec

# An image may be resized to at most this many times the pixels of the model's square resize (the eval
# transform scales the short side to resolution / crop_pct): aspect ratios up to 16:1 pass, a 20000 x 4 strip
# that would become 365000 x 73 px for a 64 px model does not
MAX_RESIZED_AREA = 16


@dataclass
class Classifier:
    """An image classifier with its own preprocessing (resolution, crop, mean/std from its config)."""

    task: TaskSpec  # classification's task object (its route, its options)
    engines: Engines
    name: str
    backend: str

    def __post_init__(self) -> None:
        config = self.engines.first.config
        self.labels = class_names_for(config)
        self.transform = eval_transform(config)
        self.resolution = config.resolution
        self.resize = int(math.floor(config.resolution / config.crop_pct))  # as eval_transform resizes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One preprocessed image (what ``preprocess`` returns and the protocol's FP32 input holds)."""
        return 3, self.resolution, self.resolution

    def refuse_size(self, width: int, height: int) -> str | None:
        """Why an image of this size is not worth resizing for this model, or None (checked before decoding)."""
        short, long = sorted((width, height))
        resized = (self.resize, int(long * self.resize / max(short, 1)))
        if resized[0] * resized[1] > MAX_RESIZED_AREA * self.resize ** 2:
            return (f"image {width}x{height} would be resized to {resized[1]}x{resized[0]} px for {self.name}'s "
                    f"{self.resolution} px input: more than {MAX_RESIZED_AREA}x the {self.resize}x{self.resize} px "
                    f"the model needs (aspect ratio above {MAX_RESIZED_AREA}:1; refused before decoding)")
        return None

    def preprocess(self, image: Image.Image, **options: Any) -> torch.Tensor:
        return self.transform(image)

    def tensor_input(self, x: torch.Tensor, **options: Any) -> torch.Tensor:
        """An already preprocessed image (the protocol's FP32 input) as ``run_batch`` takes it."""
        return x

    @torch.inference_mode()
    def run_batch(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Class probabilities for each input, computed as one batch."""
        return list(self.engines.get()(torch.stack(inputs)).float().softmax(-1))

    def answer(self, probs: torch.Tensor, path: str | None = None, *, topk: int) -> dict:
        values, indices = probs.topk(min(topk, len(self.labels)))
        return classification(indices.tolist(), values.tolist(), self.labels, path=path)

    # ---- the Open Inference Protocol (effnet.serve.protocol): its outputs
    def output_metadata(self) -> list[tuple[str, str, list[int]]]:
        n = len(self.labels)
        return [("probabilities", "FP32", [-1, n]), ("top_labels", "BYTES", [-1, -1]),
                ("top_indices", "INT64", [-1, -1]), ("top_scores", "FP32", [-1, -1])]

    def output_tensors(self, outputs: list[torch.Tensor], *, topk: int) -> dict[str, np.ndarray]:
        """Every image's class probabilities, and its top-k classes best first (names, indices, scores)."""
        probs = torch.stack(outputs)
        values, indices = probs.topk(min(topk, len(self.labels)), dim=-1)
        labels = np.array([[self.labels[i].encode() for i in row] for row in indices.tolist()], dtype=object)
        return {"probabilities": probs.numpy(), "top_labels": labels.reshape(len(outputs), -1),
                "top_indices": indices.numpy().astype(np.int64), "top_scores": values.numpy()}


def served_classifier(task: TaskSpec, model: nn.Module, backend: str = "auto", calibration: str | None = None,
                      copies: int = 1, threads: int | None = None) -> Classifier:
    """``model`` behind ``backend`` with ``copies`` engines of ``threads`` threads, one per inference thread."""
    engines = build_engines(model, backend, calibration, copies, threads)
    if backend == "auto":  # say which runtime "auto" picked
        backend = f"auto ({type(engines[0]).__name__})"
    return Classifier(task, Engines(engines), name=model.config.name, backend=backend)
