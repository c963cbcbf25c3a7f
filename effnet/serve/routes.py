"""Each task's own endpoint, built from its task object's :class:`~effnet.taskspec.Route` (path, request options
with their defaults and bounds, the schema of one image's answer), and a 404 naming the right endpoint on every
other task's path. Nothing here knows which tasks exist: ``effnet.tasks`` lists them."""

from __future__ import annotations

import inspect
from typing import Generic, TypeVar

from fastapi import FastAPI, File, Query, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..deploy.engines import ServedModel
from ..taskspec import Route, TaskSpec

R = TypeVar("R")


class Error(BaseModel):
    detail: str


class Answer(BaseModel, Generic[R]):
    """What a task's route answers: the model's name, one result per uploaded image, the time it took."""

    model: str
    results: list[R] = Field(description="one per uploaded image, in the order sent")
    ms: float


BUSY = {"model": Error, "description": "server busy (queue or concurrency limit) or shutting down; see "
                                       "Retry-After", "headers": {"Retry-After": {"schema": {"type": "integer"}}}}
ERRORS = {400: {"model": Error, "description": "empty, truncated or corrupt image"},
          404: {"model": Error, "description": "the served model is of another task (the detail names the "
                                               "endpoint to use)"},
          408: {"model": Error, "description": "the body did not arrive within --body-timeout"},
          413: {"model": Error, "description": "body over --max-upload-mb, or more images than --max-queue"},
          415: {"model": Error, "description": "not an image"},
          422: {"description": "missing `file` field, or an image over the size limits"},
          503: BUSY}
FILE = File(..., min_length=1, description="one or more images (JPEG, PNG, WebP, ...): repeat the field for "
                                          "several")


def _signature(route: Route) -> inspect.Signature:
    """The endpoint's parameters as FastAPI reads them: the files, then each option as a bounded query parameter."""
    params = [inspect.Parameter("file", inspect.Parameter.KEYWORD_ONLY, default=FILE, annotation=list[UploadFile])]
    params += [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, annotation=o.value_type,
                                 default=Query(o.default, ge=o.low, le=o.high, description=o.help))
               for o in route.options]
    return inspect.Signature(params, return_annotation=JSONResponse)


def add_task_route(app: FastAPI, task: TaskSpec, answer_uploads) -> None:
    """``POST task.route.path``: every uploaded image answered by ``answer_uploads(files, **options)``."""
    route = task.route

    async def endpoint(file: list[UploadFile], **options) -> JSONResponse:
        return await answer_uploads(file, **options)

    endpoint.__signature__ = _signature(route)
    endpoint.__name__ = route.path.strip("/").replace("/", "_") or "task"
    app.add_api_route(route.path, endpoint, methods=["POST"], response_model=Answer[route.result()],
                      responses=ERRORS, summary=route.summary)


def add_wrong_task_routes(app: FastAPI, served: ServedModel, tasks: tuple[TaskSpec, ...]) -> None:
    """``POST`` to another task's endpoint: 404 naming the right one, before the body is parsed."""
    own = served.task

    def wrong_task(other: TaskSpec):
        detail = (f"{served.name} is {own.noun}, not {other.noun}: POST the image to {own.route.path} "
                  f"({other.route.path} is for {other.plural})")

        async def refuse() -> JSONResponse:
            return JSONResponse({"detail": detail}, status_code=404)
        return refuse

    for other in tasks:
        if other.route.path != own.route.path:
            app.add_api_route(other.route.path, wrong_task(other), methods=["POST"], include_in_schema=False)
