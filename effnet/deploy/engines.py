"""Inference engines for serving: one per inference thread (:class:`Engines`), and the :class:`ServedModel`
interface each task implements (``effnet.classify.served``, ``effnet.detect.served``, ``effnet.segment.served``)
so that ``effnet serve`` runs every kind the same way.

A served model carries its task object (``task``: its route, the route's options, its wording), turns one decoded
image into a model input (``preprocess``, on a decoding thread), runs a batch of inputs (``run_batch``, on an inference thread) and turns
one result into the JSON answer (``answer``, on the event loop, so it must be cheap).

Each inference thread gets an engine of its own: an ONNX Runtime session or OpenVINO compiled model is built once per
thread with ``threads`` intra-op threads, so that several batches can run side by side without the engines fighting
over the cores. A PyTorch module is shared (its forward is thread-safe; the thread count is set per thread by the
batcher).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Protocol

from PIL import Image
from torch import nn

from ..errors import UsageError
from ..taskspec import TaskSpec
from .export import ExportOutputs
from .predictors import ExecuTorchPredictor, OnnxPredictor, OpenVinoPredictor, with_backend


class ServedModel(Protocol):
    """What ``effnet serve`` asks of a task's model (``classify.served.Classifier``, ``detect.served.Detector``):
    its task's own route (``task.route``) and the Open Inference Protocol both go through these. ``options`` are
    the task route's options, already checked (``task.route.parse``)."""

    task: TaskSpec
    name: str
    backend: str

    @property
    def input_shape(self) -> tuple[int, int, int]: ...  # (C, H, W) of a preprocessed FP32 input

    def refuse_size(self, width: int, height: int) -> str | None: ...  # why an image is too costly, before decoding

    def preprocess(self, image: Image.Image, **options: Any) -> Any: ...

    def tensor_input(self, x: Any, **options: Any) -> Any: ...  # an already preprocessed tensor (the protocol's FP32)

    def run_batch(self, inputs: list[Any]) -> list[Any]: ...

    def answer(self, output: Any, path: str | None = None, **options: Any) -> dict: ...  # effnet.results' schema

    def output_metadata(self) -> list[tuple[str, str, list[int]]]: ...  # (name, datatype, shape) per output

    # the protocol's outputs; a UsageError (outputs too large to pack for this request) is answered 422
    def output_tensors(self, outputs: list[Any], **options: Any) -> dict[str, Any]: ...


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


def build_engines(model: nn.Module, backend: str, calibration: str | None, copies: int, threads: int | None,
                  outputs: ExportOutputs = ExportOutputs()) -> list:
    """``copies`` engines for ``model`` (the same module for torch; one runtime session each otherwise); an export
    is verified as the task's ``outputs`` says."""
    try:
        first = with_backend(model, backend, calibration, threads=threads, outputs=outputs)
        if not isinstance(first, (OnnxPredictor, OpenVinoPredictor, ExecuTorchPredictor)):
            return [first] * copies  # a PyTorch module: shared
        return [first] + [with_backend(model, backend, calibration, threads=threads, outputs=outputs)
                          for _ in range(copies - 1)]
    except UsageError:
        raise
    except Exception as exc:  # export / quantization problems: one line, not a traceback
        raise UsageError(f"backend {backend}: {exc}") from None
