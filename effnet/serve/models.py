"""What the service serves: a model behind one small interface, so that another kind can plug in.

A served model says which ``kind`` it is (the app maps a kind to its endpoint: ``classify`` answers
``POST /predict``), turns one decoded image into a model input (``preprocess``, on a decoding thread),
runs a batch of inputs (``run_batch``, on the inference thread) and turns one row of output into the JSON
answer (``answer``, on the event loop, so it must be cheap). A detector adds a class with kind ``detect``
and the app a ``POST /detect`` route for it; nothing here is specific to classification but ``Classifier``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image
from torch import nn

from ..data import eval_transform
from ..deploy import with_backend
from ..errors import UsageError
from ..models.imagenet import class_names_for
from ..models.registry import build_model_for_inference
from ..models.weights import is_effnet_file


class ServedModel(Protocol):
    name: str
    kind: str
    backend: str

    def preprocess(self, image: Image.Image) -> Any: ...

    def run_batch(self, inputs: list[Any]) -> list[Any]: ...

    def answer(self, output: Any, **options: Any) -> dict: ...


@dataclass
class Classifier:
    """An image classifier with its own preprocessing (resolution, crop, mean/std from its config)."""

    model: nn.Module
    name: str
    backend: str
    kind: str = "classify"

    def __post_init__(self) -> None:
        self.labels = class_names_for(self.model.config)
        self.transform = eval_transform(self.model.config)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    @torch.inference_mode()
    def run_batch(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Class probabilities for each input, computed as one batch."""
        return list(self.model(torch.stack(inputs)).float().softmax(-1))

    def answer(self, probs: torch.Tensor, topk: int = 5) -> dict:
        values, indices = probs.topk(min(topk, len(self.labels)))
        return {"predictions": [{"label": self.labels[i], "index": i, "score": round(v, 6)}
                                for v, i in zip(values.tolist(), indices.tolist())]}


def resolve_model_file(spec: str) -> str | None:
    """A training run directory to its ``model.safetensors``; a file to itself; a name to None."""
    path = Path(spec)
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise UsageError(f"{path}: a run directory must hold model.safetensors (is training finished?)")
        return str(weights)
    if path.is_file() and path.suffix != ".json":
        if not is_effnet_file(path):
            raise UsageError(f"{path}: not an effnet .safetensors model (convert foreign weights with "
                             "`effnet convert` first)")
        return str(path)
    return None


def load_classifier(spec: str, pretrained: bool = False, backend: str = "auto",
                    calibration: str | None = None) -> Classifier:
    """``spec`` is a model name (with ``pretrained``), a config .json, a run directory or a .safetensors file."""
    weights = resolve_model_file(spec)
    if weights and pretrained:
        raise UsageError("--pretrained goes with a model name, not with a weights file or run directory")
    model = build_model_for_inference(None if weights else spec, weights, pretrained)
    if backend.endswith("int8") and not calibration:  # no uploads exist yet to calibrate on
        raise UsageError(f"--backend {backend} needs --calibration FOLDER of real images")
    try:
        served = with_backend(model, backend, calibration)
    except UsageError:
        raise
    except Exception as exc:  # export / quantization problems: one line, not a traceback
        raise UsageError(f"backend {backend}: {exc}") from None
    if backend == "auto":  # say which runtime "auto" picked
        backend = f"auto ({type(served).__name__})"
    return Classifier(served, name=model.config.name, backend=backend)
