"""One JSON result schema for every place effnet answers with predictions: ``effnet predict --json`` and
``--output``, ``effnet detect predict --json``, ``POST /predict``, ``POST /detect`` and the page.

A classification::

    {"path": "cat.jpg", "predictions": [{"label": "tabby", "index": 281, "score": 0.91}, ...]}

A detection (boxes x1, y1, x2, y2 in the image's own pixels)::

    {"path": "street.jpg", "width": 640, "height": 480,
     "detections": [{"label": "person", "index": 1, "score": 0.93, "box": [x1, y1, x2, y2]}, ...]}

``path`` is present where the image came from a file. ``label`` is always the class name and ``index`` the
model's output index, so a client reads both tasks the same way. A model that carries no class names is answered
with :func:`label_names`' ``class_<index>`` for either task.
"""

from __future__ import annotations

from collections.abc import Sequence


def label_names(names: Sequence[str] | None, count: int) -> tuple[str, ...]:
    """The class names of a model with ``count`` outputs: its own ``names``, else ``class_0``, ``class_1``... (the
    form classifiers have always answered with, and saved in Hub exports; detectors used to say ``"0"``, ``"1"``,
    which reads like an index, not a name)."""
    return tuple(names) if names else tuple(f"class_{i}" for i in range(count))


def classification(indices: Sequence[int], scores: Sequence[float], labels: Sequence[str],
                   path: str | None = None) -> dict:
    """Top-k classes, best first: ``indices`` and ``scores`` in the same order."""
    out: dict = {} if path is None else {"path": path}
    out["predictions"] = [{"label": labels[i], "index": int(i), "score": round(float(s), 6)}
                          for i, s in zip(indices, scores)]
    return out


def detection(boxes: Sequence[Sequence[float]], scores: Sequence[float], indices: Sequence[int],
              labels: Sequence[str], width: int, height: int, path: str | None = None) -> dict:
    """Final boxes of one image in its own pixels, with the class name of each."""
    out: dict = {} if path is None else {"path": path}
    out.update(width=int(width), height=int(height), detections=[
        {"label": labels[int(i)], "index": int(i), "score": round(float(s), 4), "box": [round(float(v), 2) for v in b]}
        for b, s, i in zip(boxes, scores, indices)])
    return out
