"""The two tasks side by side: what each kind of model brings to the commands and the service that take either kind.

:func:`effnet.models.registry.task_of` says which task a model is for (the one place that asks); this table says
what that task does with it, so ``effnet export``, ``effnet plot`` and ``effnet serve`` dispatch on the answer
instead of asking again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .classify.export import export_classifier
from .classify.served import served_classifier
from .classify.task import plot_run
from .detect.export_task import export_for_task
from .deploy.options import Exported, ExportOptions
from .detect.served import served_detector
from .detect.task import plot_detection_run
from .models.config import ModelConfig
from .models.detector_config import DetectorConfig
from .models.registry import load_model, task_of


@dataclass(frozen=True)
class TaskKind:
    name: str  # "classify" or "detect" (effnet.models.registry.TASKS)
    export: Callable  # (model, ExportOptions) -> Exported
    served: Callable  # (model, backend, calibration, copies, threads) -> ServedModel
    plot: Callable  # (run_dir) -> curves.png


TASKS = {
    "classify": TaskKind("classify", export_classifier, served_classifier, plot_run),
    "detect": TaskKind("detect", export_for_task, served_detector, plot_detection_run),
}


def task_for(model_or_config: nn.Module | ModelConfig | DetectorConfig) -> TaskKind:
    return TASKS[task_of(model_or_config)]


def export(spec: str, options: ExportOptions, pretrained: bool = False, weights: str | None = None,
           ema: bool = False, task: str | None = None) -> Exported:
    """``effnet export``: the model ``spec`` names (any kind, or only ``task``'s), exported and verified by its task."""
    model = load_model(spec, pretrained=pretrained, weights=weights, ema=ema, task=task)
    return task_for(model).export(model, options)
