"""What the service serves: the model a user names, behind its task's :class:`~effnet.deploy.engines.ServedModel`
(``effnet.classify.served`` answers ``POST /predict``, ``effnet.detect.served`` ``POST /detect``)."""

from __future__ import annotations

from ..deploy.engines import ServedModel
from ..errors import UsageError
from ..models.zoo.registry import load_model as resolve_model
from ..tasks import task_for

__all__ = ["ServedModel", "load_model"]


def load_model(spec: str, pretrained: bool = False, backend: str = "auto", calibration: str | None = None,
               copies: int = 1, threads: int | None = None) -> ServedModel:
    """``spec`` is a model name (with ``pretrained``), a config .json, a run directory or a .safetensors file
    (:func:`effnet.models.zoo.registry.load_model` decides which kind it is); ``copies`` engines with ``threads``
    threads each, one per inference thread."""
    if backend.endswith("int8") and not calibration:  # no uploads exist yet to calibrate on
        raise UsageError(f"--backend {backend} needs --calibration FOLDER of real images")
    model = resolve_model(spec, pretrained=pretrained)
    return task_for(model).served(model, backend, calibration, copies, threads)
