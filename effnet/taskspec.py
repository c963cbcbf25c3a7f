"""What a task is to the rest of effnet: one :class:`TaskSpec` object per task package (``effnet.classify.TASK``,
``effnet.detect.TASK``), listed by :mod:`effnet.tasks`.

The training loop, ``effnet export``, ``effnet serve``, ``effnet plot`` and the command line never ask "which task
is this?" and never keep a table keyed by a task's name: they take the model's task object (``tasks.task_for``)
and read what they need from it -- its wording, its training task and recipes, its exporter and the flags that
exporter reads, its served model and that model's web route (path, request options with their defaults and bounds,
response schema), its curves. A third task is one more module that builds one of these, plus one registration line
(:func:`effnet.tasks.register`).

No torch here: the objects are plain data and callables, imported by whoever runs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

@dataclass(frozen=True)
class RouteOption:
    """A request option of a task's web route (a query parameter of ``POST /predict``, a ``parameters`` entry of
    an Open Inference Protocol request): its type, default and bounds, checked here and nowhere else."""

    name: str  # e.g. "topk"
    value_type: type  # int or float
    default: int | float
    low: int | float
    high: int | float
    help: str

    def check(self, value: Any) -> int | float:
        """``value`` as this option's type, or a :class:`UsageError` naming the option and its range."""
        allowed = (int,) if self.value_type is int else (int, float)
        if (isinstance(value, bool) or not isinstance(value, allowed) or not math.isfinite(value)
                or not self.low <= value <= self.high):
            what = "an integer" if self.value_type is int else "a number"
            raise UsageError(f"{self.name} must be {what} in {self.low:g}..{self.high:g}, got {value!r}")
        return self.value_type(value)


@dataclass(frozen=True)
class Route:
    """A task's own endpoint of ``effnet serve``: images in (multipart field ``file``, repeated for several),
    one answer per image out, in the schema ``result()`` describes (a pydantic model, built on demand: pydantic
    comes with the ``serve`` extra)."""

    path: str  # "/predict"
    summary: str  # what the OpenAPI docs say it does
    result: Callable[[], type]  # -> the pydantic model of one image's answer (effnet.results' schema)
    options: tuple[RouteOption, ...] = ()

    def parse(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """The options a request gives (each checked, defaults for the rest); unknown keys are ignored, as the
        Open Inference Protocol lets a client send parameters a model does not read."""
        return {o.name: o.check(parameters.get(o.name, o.default)) for o in self.options}

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def describe(self) -> list[dict[str, Any]]:
        """The options as JSON (``GET /health``; the page makes an input of each)."""
        return [{"name": o.name, "type": o.value_type.__name__, "default": o.default, "low": o.low,
                 "high": o.high, "help": o.help} for o in self.options]


@dataclass(frozen=True)
class Flag:
    """A command-line flag one task adds to a shared command (``effnet export --raw`` for detectors): argparse's
    ``add_argument`` keywords, and the value that means "not given" so another task can refuse it."""

    name: str  # "--raw"
    help: str
    default: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)  # further add_argument keywords (type, choices, action)

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")

    def add_to(self, parser) -> None:
        parser.add_argument(self.name, default=self.default, help=self.help, **dict(self.options))


@dataclass(frozen=True)
class TaskSpec:
    """Everything the house needs from one task. ``name`` is what the resolver answers for the task's models
    (``effnet.models.zoo.registry.task_of``), found by their config's type (``config_type``)."""

    name: str  # "classify": the resolver's answer, the /health "kind", `effnet_<name>` in the protocol's metadata
    noun: str  # "a classifier": how messages name one of its models
    plural: str  # "classifiers"
    config_type: type  # the config class its models carry
    trainer: type  # its training task (effnet.train.task.Task): its recipes and curves are class attributes
    route: Route  # its endpoint of `effnet serve`
    make_served: Callable[..., Any]  # (task, model, backend, calibration, copies, threads) -> a ServedModel
    export: Callable[..., Any]  # (model, effnet.deploy.options.ExportOptions) -> Exported (verified)
    backends: tuple[str, ...] = ("torch",)  # what its models run on for predict / eval / serve, besides "auto"
    export_flags: tuple[Flag, ...] = ()  # its own flags of `effnet export` (in ExportOptions.settings)
    train_defaults: Mapping[str, Any] = field(default_factory=dict)  # its `train` command's defaults (model, recipe, ...)

    def served(self, model, backend: str = "auto", calibration: str | None = None, copies: int = 1,
               threads: int | None = None):
        """``model`` behind ``backend`` for ``effnet serve``: ``copies`` engines of ``threads`` threads."""
        if backend != "auto" and backend not in self.backends:
            raise UsageError(f"{self.plural} run on --backend auto, {', '.join(self.backends)}; not {backend}")
        return self.make_served(self, model, backend, calibration, copies, threads)
