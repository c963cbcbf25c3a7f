"""The tasks effnet knows, each one object (:class:`effnet.taskspec.TaskSpec`) exported by its package.

This module only lists them. The resolver (``effnet.models.zoo.registry.task_of``) says which task a model is for;
:func:`task_for` hands back that task's object, and ``effnet export``, ``effnet plot``, ``effnet serve`` and the
training commands read what they need from it. :func:`register` adds a task (a plug-in, or a test's toy task).
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .classify.spec import TASK as CLASSIFY
from .deploy.options import Exported, ExportOptions
from .deploy.predictors import ExportedFile
from .detect.spec import TASK as DETECT
from .segment.spec import TASK as SEGMENT
from .errors import UsageError
from .models.zoo.registry import config_of, load_model, register_config, task_of
from .taskspec import Flag, TaskSpec

_TASKS: dict[str, TaskSpec] = {}


def register(task: TaskSpec) -> TaskSpec:
    """Make ``task`` known: the resolver maps its ``config_type`` to it, and the shared commands offer its flags."""
    register_config(task.config_type, task.name, task.noun)
    _TASKS[task.name] = task
    return task


for _task in (CLASSIFY, DETECT, SEGMENT):
    register(_task)


def all_tasks() -> tuple[TaskSpec, ...]:
    return tuple(_TASKS.values())


def get(name: str) -> TaskSpec:
    """The task called ``name`` (``"classify"``, ``"detect"``, ...), or one line listing the known ones."""
    if name not in _TASKS:
        raise UsageError(f"unknown task {name!r} (known: {', '.join(_TASKS)})")
    return _TASKS[name]


def task_for(thing: nn.Module | Any | str | os.PathLike) -> TaskSpec:
    """The task of a model, a config, a name, a saved file or a run directory."""
    return get(task_of(thing))


def backends() -> tuple[str, ...]:
    """Every backend some task's models run on (``effnet serve --backend``; each task refuses the others)."""
    return tuple(dict.fromkeys(backend for task in all_tasks() for backend in task.backends))


def export_flags() -> tuple[Flag, ...]:
    """Every task's own flags of ``effnet export`` (each task reads its own from ``ExportOptions.settings``)."""
    return tuple(flag for task in all_tasks() for flag in task.export_flags)


def check_export_flags(task: TaskSpec, options: ExportOptions) -> None:
    """One line for a flag another task owns that was given for this task's model (``--raw`` for a classifier)."""
    own = {flag.dest for flag in task.export_flags}
    for other in all_tasks():
        for flag in other.export_flags:
            given = options.settings.get(flag.dest, flag.default)
            if flag.dest not in own and given != flag.default:
                raise UsageError(f"{flag.name} is for {other.plural}; this model is {task.noun}")


def export(spec: str, options: ExportOptions, pretrained: bool = False, weights: str | None = None,
           ema: bool = False, task: str | None = None) -> Exported:
    """``effnet export``: the model ``spec`` names (any kind, or only ``task``'s), exported and verified by its task."""
    model = load_model(spec, pretrained=pretrained, weights=weights, ema=ema, task=task)
    if isinstance(model, ExportedFile):
        raise UsageError(f"{spec} is already an exported file; export the model itself (a run folder or "
                         ".safetensors) to another format")
    owner = task_for(model)
    check_export_flags(owner, options)
    return owner.export(model, options)


def plot(run_dir: str | os.PathLike):
    """``effnet plot``: the run's curves, drawn by its task."""
    return task_for(config_of(run_dir)).trainer.plot(run_dir)
