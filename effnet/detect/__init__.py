"""Object detection, the task: training (``task``: :class:`DetectionTask` for the shared loop; ``loss``: focal +
Huber), anchors, box coding and NMS (``boxes``), the one post-processing every path calls (``pipeline``:
:class:`~effnet.detect.pipeline.DetectionPipeline`), images in and final boxes out (``predictor``: :class:`Predictor`),
COCO evaluation (``evaluate``), prediction on image files (``predict``), the end-to-end ONNX export (``export``; what
every export is checked on: ``verify``) and serving (``served``: ``POST /detect``); ``commands``: ``effnet detect
train|eval|predict|export``. The model itself is ``effnet.models.nets.efficientdet`` + ``bifpn`` on the classifier's
backbone; classification (``effnet.classify``) is the sibling task."""

from .predictor import Predictor
from .task import DetectionTask

__all__ = ["DetectionTask", "Predictor"]
