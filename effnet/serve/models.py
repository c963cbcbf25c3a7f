"""What the service serves: the model a user names, behind its task's :class:`~effnet.deploy.engines.ServedModel`
(``effnet.classify.served`` answers ``POST /predict``, ``effnet.detect.served`` ``POST /detect``)."""

from __future__ import annotations

from ..deploy.engines import ServedModel
from ..deploy.predictors import ExportedFile
from ..errors import UsageError
from ..models.zoo.registry import load_model as resolve_model
from ..tasks import task_for

__all__ = ["ServedModel", "load_model"]


def load_model(spec: str, pretrained: bool = False, backend: str = "auto", calibration: str | None = None,
               copies: int = 1, threads: int | None = None) -> ServedModel:
    """``spec`` is a model name (with ``pretrained``), a config .json, a run directory, a .safetensors file or an
    exported .onnx / .xml / .pte with its config beside it (:func:`effnet.models.zoo.registry.load_model` decides
    which kind it is); ``copies`` engines with ``threads`` threads each, one per inference thread."""
    model = resolve_model(spec, pretrained=pretrained)
    if backend.endswith("int8") and not calibration and not isinstance(model, ExportedFile):
        raise UsageError(f"--backend {backend} needs --calibration FOLDER of real images")  # no uploads yet
    return task_for(model).served(model, backend, calibration, copies, threads)
