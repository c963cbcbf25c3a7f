"""What the service serves: a model behind one small interface, so that each kind plugs in the same way.

A served model says which ``kind`` it is (the app maps a kind to its endpoint: ``classify`` answers
``POST /predict``, ``detect`` answers ``POST /detect``), turns one decoded image into a model input
(``preprocess``, on a decoding thread), runs a batch of inputs (``run_batch``, on an inference thread) and
turns one result into the JSON answer (``answer``, on the event loop, so it must be cheap).

Each inference thread gets an engine of its own (:class:`Engines`): an ONNX Runtime session or OpenVINO
compiled model is built once per thread with ``threads`` intra-op threads, so that several batches can run side
by side without the engines fighting over the cores. A PyTorch module is shared (its forward is thread-safe;
the thread count is set per thread by the batcher).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image
from torch import nn

from ..data import eval_transform
from ..data.coco import detection_eval_image
from ..deploy import with_backend
from ..deploy.predictors import OnnxPredictor, OpenVinoPredictor
from ..detect.boxes import anchors_for, flatten_outputs, postprocess
from ..errors import UsageError
from ..models.efficientdet import is_detector_name, load_detector, read_detector_config
from ..models.imagenet import class_names_for
from ..models.registry import build_model_for_inference, create_model
from ..models.weights import is_effnet_file, run_weights


class ServedModel(Protocol):
    name: str
    kind: str
    backend: str

    def preprocess(self, image: Image.Image, **options: Any) -> Any: ...

    def run_batch(self, inputs: list[Any]) -> list[Any]: ...

    def answer(self, output: Any, **options: Any) -> dict: ...


class Engines:
    """One engine per inference thread: the first call from a thread claims one of the engines for good."""

    def __init__(self, engines: list[nn.Module]) -> None:
        self.first = engines[0]
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for engine in engines:
            self._free.put(engine)
        self._local = threading.local()

    def get(self) -> nn.Module:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            try:
                engine = self._local.engine = self._free.get_nowait()
            except queue.Empty:
                raise RuntimeError("more inference threads than engines") from None
        return engine


@dataclass
class Classifier:
    """An image classifier with its own preprocessing (resolution, crop, mean/std from its config)."""

    engines: Engines
    name: str
    backend: str
    kind: str = "classify"

    def __post_init__(self) -> None:
        config = self.engines.first.config
        self.labels = class_names_for(config)
        self.transform = eval_transform(config)

    def preprocess(self, image: Image.Image, **options: Any) -> torch.Tensor:
        return self.transform(image)

    @torch.inference_mode()
    def run_batch(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Class probabilities for each input, computed as one batch."""
        return list(self.engines.get()(torch.stack(inputs)).float().softmax(-1))

    def answer(self, probs: torch.Tensor, topk: int = 5) -> dict:
        values, indices = probs.topk(min(topk, len(self.labels)))
        return {"predictions": [{"label": self.labels[i], "index": i, "score": round(v, 6)}
                                for v, i in zip(values.tolist(), indices.tolist())]}


@dataclass
class DetectInput:
    """A letterboxed image, its resize scale, its original size and the request's score threshold."""

    x: torch.Tensor
    scale: float
    width: int
    height: int
    score_threshold: float


@dataclass
class Detector:
    """An EfficientDet: letterbox preprocessing, forward as one batch, decoding + per-class NMS per image,
    exactly as ``effnet detect predict`` (:func:`effnet.detect.evaluate.predict_files`) does it."""

    engines: Engines
    name: str
    backend: str
    kind: str = "detect"
    config: Any = field(init=False)

    def __post_init__(self) -> None:
        self.config = self.engines.first.config
        self.labels = self.config.class_names or tuple(str(i) for i in range(self.config.num_classes))
        res = self.config.resolution
        self.anchors = anchors_for(self.config, res, res)

    def preprocess(self, image: Image.Image, score_threshold: float = 0.3, **options: Any) -> DetectInput:
        x, scale = detection_eval_image(image, self.config.mean, self.config.std, self.config.resolution)
        return DetectInput(x, scale, image.width, image.height, score_threshold)

    @torch.inference_mode()
    def run_batch(self, inputs: list[DetectInput]) -> list[dict]:
        """Detections (boxes in original-image pixels) for each input; the forward pass is one batch."""
        x = torch.stack([i.x for i in inputs])
        class_out, box_out = self.engines.get()(x)
        cls, box = flatten_outputs(class_out, box_out, self.config.num_classes)
        out = []
        for row, item in enumerate(inputs):  # each request has its own threshold: post-process image by image
            det = postprocess(cls[row:row + 1], box[row:row + 1], self.anchors, tuple(x.shape[-2:]), [item.scale],
                              score_threshold=item.score_threshold)[0]
            out.append(dict(width=item.width, height=item.height, boxes=det.boxes.tolist(),
                            scores=det.scores.tolist(), labels=det.labels.tolist()))
        return out

    def answer(self, found: dict, **options: Any) -> dict:
        return {"width": found["width"], "height": found["height"], "detections": [
            {"box": [round(v, 2) for v in b], "score": round(s, 4), "label": int(lab), "class": self.labels[lab]}
            for b, s, lab in zip(found["boxes"], found["scores"], found["labels"])]}


def resolve_model_file(spec: str) -> str | None:
    """A training run directory to its ``model.safetensors``; a file to itself; a name to None."""
    path = Path(spec)
    if path.is_dir():
        return str(run_weights(path))
    if path.is_file() and path.suffix != ".json":
        if read_detector_config(path) is None and not is_effnet_file(path):
            raise UsageError(f"{path}: not an effnet .safetensors model (convert foreign weights with "
                             "`effnet convert` first)")
        return str(path)
    return None


def _engines(model: nn.Module, backend: str, calibration: str | None, copies: int, threads: int | None) -> list:
    """``copies`` engines for ``model`` (the same module for torch; one runtime session each otherwise)."""
    if backend.endswith("int8") and not calibration:  # no uploads exist yet to calibrate on
        raise UsageError(f"--backend {backend} needs --calibration FOLDER of real images")
    try:
        first = with_backend(model, backend, calibration, threads=threads)
        if not isinstance(first, (OnnxPredictor, OpenVinoPredictor)):
            return [first] * copies  # a PyTorch module: shared
        return [first] + [with_backend(model, backend, calibration, threads=threads) for _ in range(copies - 1)]
    except UsageError:
        raise
    except Exception as exc:  # export / quantization problems: one line, not a traceback
        raise UsageError(f"backend {backend}: {exc}") from None


def load_model(spec: str, pretrained: bool = False, backend: str = "auto", calibration: str | None = None,
                copies: int = 1, threads: int | None = None) -> Classifier | Detector:
    """``spec`` is a model name (with ``pretrained``), a config .json, a run directory or a .safetensors file;
    a detector (its file, or an ``efficientdet_*`` name) becomes a :class:`Detector`, anything else a
    :class:`Classifier`. ``copies`` engines with ``threads`` threads each, one per inference thread."""
    weights = resolve_model_file(spec)
    if weights and pretrained:
        raise UsageError("--pretrained goes with a model name, not with a weights file or run directory")
    if (weights and read_detector_config(weights) is not None) or (not weights and is_detector_name(spec)):
        if backend not in ("auto", "torch"):
            raise UsageError(f"a detector is served with --backend torch (or auto), not {backend}")
        model = load_detector(weights) if weights else create_model(spec, pretrained=pretrained)
        # the plain eval model, as `effnet detect predict` runs it: the same boxes, not just close ones
        return Detector(Engines([model.eval()] * copies), name=model.config.name, backend="torch")
    model = build_model_for_inference(None if weights else spec, weights, pretrained)
    engines = _engines(model, backend, calibration, copies, threads)
    if backend == "auto":  # say which runtime "auto" picked
        backend = f"auto ({type(engines[0]).__name__})"
    return Classifier(Engines(engines), name=model.config.name, backend=backend)

