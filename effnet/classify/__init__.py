"""Image classification, the task: training (``task``: :class:`ClassificationTask` for the shared loop), evaluation
(``evaluate``: top-1/top-5/per-class, on PyTorch or an exported backend), prediction on files, folders and globs, streamed and sharded (``predict``),
export (``export``: the verified ONNX / OpenVINO / TorchScript export behind ``effnet export``) and serving
(``served``: ``POST /predict``); ``commands``: ``effnet train|eval|predict|demo``. The model itself is
``effnet.models.nets.efficientnet``; detection (``effnet.detect``) is the sibling task."""

from .evaluate import EvalResult, evaluate
from .predict import ResultFile, Shard, expand_inputs, predict_files, predict_to_file, stream_predictions
from .task import ClassificationTask, plot_run, train

__all__ = ["ClassificationTask", "train", "plot_run", "EvalResult", "evaluate", "predict_files", "stream_predictions",
           "predict_to_file", "ResultFile", "Shard", "expand_inputs"]
