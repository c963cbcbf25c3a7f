"""Classification as one object (:class:`effnet.taskspec.TaskSpec`): what training, ``effnet export``,
``effnet serve`` and ``effnet plot`` need from this task."""

from __future__ import annotations

from ..deploy.predictors import BACKENDS
from ..models.nets.config import ModelConfig
from ..models.zoo.registry import CLASSIFY
from ..taskspec import Route, RouteOption, TaskSpec
from .export import EXPORT_FLAGS, export_classifier
from .served import served_classifier
from .task import ClassificationTask


def _result() -> type:
    from .schema import Classification

    return Classification


TOPK = RouteOption("topk", int, 5, 1, 1000, "how many classes to answer, best first")

TASK = TaskSpec(
    name=CLASSIFY, noun="a classifier", plural="classifiers", config_type=ModelConfig,
    trainer=ClassificationTask,
    route=Route("/predict", "top-k classes of each uploaded image (multipart field `file`, repeated for several)",
                _result, (TOPK,)),
    make_served=served_classifier, export=export_classifier, backends=BACKENDS,
    export_flags=EXPORT_FLAGS)
