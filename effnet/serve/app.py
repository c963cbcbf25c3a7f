"""The FastAPI application: ``GET /health``, the served task's own route (``POST /predict`` for a classifier,
``POST /detect`` for a detector: whatever its task object's route says), the Open Inference Protocol's ``/v2``
routes, ``GET /metrics``, the page at ``/`` and OpenAPI docs at ``/docs``.

Decoding runs on a thread pool and inference on the batcher's threads, so the event loop only moves bytes
(:mod:`.inference`). Every image a request carries (``file`` parts, or the protocol's batch) is answered, in
order, in effnet's one result schema (:mod:`effnet.results`). The work a request may cause is bounded before it
is done: the body's size and arrival time, the number of requests in the server and of images in the queue
(:mod:`.limits`), the declared and the resized image size (:mod:`.decode`). A client's mistake is answered with
a 4xx JSON error (``{"detail": ...}`` on effnet's routes, ``{"error": ...}`` on ``/v2``) and logged as one access
line, never a traceback. Docs and page assets are served from the installed packages (fastapi-offline bundles
Swagger UI), so everything works without internet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import warnings
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from starlette.exceptions import HTTPException

from . import protocol as v2
from ..tasks import all_tasks
from .batching import DynamicBatcher, QueueFull
from .decode import ImageRejected
from .inference import Inference
from .limits import Admission, BodySizeLimit, Gate, error_key
from .metrics import Metrics, MetricsMiddleware
from .models import ServedModel, load_model
from .protocol_routes import ProtocolModel, add_protocol_routes
from .routes import add_task_route, add_wrong_task_routes
from .settings import ServeSettings

STATIC = Path(__file__).parent / "static"
SETTINGS_ENV = "EFFNET_SERVE_SETTINGS"
log = logging.getLogger("effnet.serve")


def create_app(served: ServedModel, settings: ServeSettings) -> FastAPI:
    """The service for one loaded model. Its task's route is the endpoint (a classifier: ``POST /predict``,
    a detector: ``POST /detect``); every other task's endpoint answers 404 naming the right one."""
    # Pillow warns from 89 Mpx on; our own header check (decode_upload) refuses above --max-megapixels instead,
    # so the warning would only add a log line per hostile upload
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    metrics = Metrics(queue_depth=lambda: batcher.pending, in_flight=lambda: gate.in_flight)
    # each inference thread runs its engine with its share of the cores (torch's count is per thread; ONNX
    # Runtime and OpenVINO engines got theirs when they were built)
    batcher = DynamicBatcher(served.run_batch, settings.max_batch, settings.max_wait_ms, settings.inference_threads,
                             initializer=torch.set_num_threads, initargs=(settings.engine_threads,),
                             max_queue=settings.queue_limit, on_batch=metrics.observe_batch)
    inference = Inference(served, settings, batcher)
    name = settings.name or served.name

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        _on_shutdown_signal(gate.begin_shutdown)
        yield
        # uvicorn has answered the accepted requests (SIGTERM): now stop the loop and the threads
        await batcher.stop()
        inference.shutdown()

    app = FastAPIOffline(title="effnet serve", summary=f"{served.name} ({served.task.name})", lifespan=lifespan,
                         redoc_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    gate = Gate({served.task.route.path, f"/v2/models/{name}/infer"}.__contains__, batcher,
                settings.concurrency_limit, settings.body_timeout)
    app.add_middleware(Admission, gate=gate)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_error_handlers(app)
    _add_service_routes(app, served, settings, name, batcher, metrics)
    add_task_route(app, served.task, inference.answer_uploads)
    add_wrong_task_routes(app, served, all_tasks())
    add_protocol_routes(app, ProtocolModel(served, name, inference))
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImageRejected)
    async def rejected(request, exc: ImageRejected) -> JSONResponse:
        return JSONResponse({error_key(request.url.path): str(exc)}, status_code=exc.status)

    @app.exception_handler(QueueFull)
    async def queue_full(request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({error_key(request.url.path): str(exc)}, status_code=503,
                            headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(v2.ProtocolError)
    async def protocol_error(request, exc: v2.ProtocolError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({error_key(request.url.path): exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)


def _add_service_routes(app: FastAPI, served: ServedModel, settings: ServeSettings, name: str,
                        batcher: DynamicBatcher, metrics: Metrics) -> None:
    @app.get("/health", summary="model name once it is loaded, limits and batching counters")
    async def health() -> dict:
        return {"status": "ok", "model": served.name, "kind": served.task.name, "backend": served.backend,
                "endpoint": served.task.route.path, "options": served.task.route.describe(),
                "protocol_name": name, "max_batch": settings.max_batch,
                "infer_threads": settings.inference_threads, "threads": settings.engine_threads,
                "max_queue": settings.queue_limit, "max_concurrency": settings.concurrency_limit,
                "stats": vars(batcher.stats)}

    @app.get("/metrics", summary="Prometheus metrics: requests by route and status, latency, batch sizes, "
                                 "queue depth, refused requests", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics_route() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")


def _on_shutdown_signal(callback) -> None:
    """Call ``callback`` on the event loop when SIGTERM / SIGINT arrives, before uvicorn's own handler (which
    only stops accepting and waits for open requests): uploads still arriving are then cut off at once."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum, frame, previous=previous):
            loop.call_soon_threadsafe(callback)
            previous(signum, frame)
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread (an embedding app): uvicorn's shutdown alone
            return


def load_served(settings: ServeSettings) -> ServedModel:
    return load_model(settings.model, settings.pretrained, settings.backend, settings.calibration,
                      copies=settings.inference_threads, threads=settings.engine_threads)


def app_from_env() -> FastAPI:
    """Factory for each ``--workers`` process: settings travel as JSON in the environment."""
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    torch.set_num_threads(settings.engine_threads)  # workers share the cores
    return create_app(load_served(settings), settings)
