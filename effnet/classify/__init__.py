"""Image classification, the task: training (``task``: :class:`ClassificationTask` for the shared loop), evaluation
(``evaluate``: top-1/top-5/per-class, on PyTorch or an exported backend), prediction on image files (``predict``),
export (``export``: the verified ONNX / OpenVINO / TorchScript export behind ``effnet export``) and serving
(``served``: ``POST /predict``); ``commands``: ``effnet train|eval|predict|demo``. The model itself is
``effnet.models.efficientnet``; detection (``effnet.detect``) is the sibling task."""

from .evaluate import EvalResult, evaluate
from .predict import Prediction, predict_files
from .task import ClassificationTask, plot_run, train

__all__ = ["ClassificationTask", "train", "plot_run", "EvalResult", "evaluate", "Prediction", "predict_files"]
