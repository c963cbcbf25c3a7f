"""Detection as one object (:class:`effnet.taskspec.TaskSpec`): what training, ``effnet export``, ``effnet serve``
and ``effnet plot`` need from this task."""

from __future__ import annotations

from ..models.nets.detector_config import DetectorConfig
from ..models.zoo.registry import DETECT
from ..taskspec import Flag, Route, RouteOption, TaskSpec
from .export_task import export_for_task
from .pipeline import SCORE_THRESHOLD
from .predictor import DETECT_BACKENDS
from .served import served_detector
from .task import DetectionTask


def _result() -> type:
    from .schema import DetectionResult

    return DetectionResult


THRESHOLD = RouteOption("score_threshold", float, SCORE_THRESHOLD, 0.0, 1.0, "boxes scoring below this are dropped")

TASK = TaskSpec(
    name=DETECT, noun="a detector", plural="detectors", config_type=DetectorConfig,
    trainer=DetectionTask,
    route=Route("/detect", "boxes (x1, y1, x2, y2 in the image's pixels), scores and classes of the objects in each "
                           "uploaded image (multipart field `file`, repeated for several)", _result, (THRESHOLD,)),
    make_served=served_detector, export=export_for_task, backends=DETECT_BACKENDS,
    export_flags=(Flag("--raw", "detectors: the raw per-level outputs instead of boxes (onnx)", default=False,
                       options={"action": "store_true"}),),
    train_defaults={"model": "efficientdet_lite0", "recipe": "detect", "batch_size": 16, "channels_last": True})
