"""The FastAPI application: ``GET /health``, ``POST /predict`` (a classifier) or ``POST /detect`` (a detector),
the page at ``/`` and OpenAPI docs at ``/docs``.

Decoding runs on a thread pool and inference on the batcher's threads, so the event loop only moves bytes.
A client's mistake is answered with a 4xx JSON ``{"detail": ...}`` and logged as one access line, never a
traceback. Docs and page assets are served from the installed packages (fastapi-offline bundles Swagger UI),
so everything works without internet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, File, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from pydantic import BaseModel, Field

from .batching import DynamicBatcher
from .decode import ImageRejected, decode_upload
from .limits import BodySizeLimit
from .models import ServedModel, load_model
from .settings import ServeSettings

STATIC = Path(__file__).parent / "static"
SETTINGS_ENV = "EFFNET_SERVE_SETTINGS"
ENDPOINTS = {"classify": "/predict", "detect": "/detect"}
WHAT = {"classify": "a classifier", "detect": "a detector"}
PLURAL = {"classify": "classifiers", "detect": "detectors"}
log = logging.getLogger("effnet.serve")


class Error(BaseModel):
    detail: str


class Prediction(BaseModel):
    label: str
    index: int
    score: float


class PredictResponse(BaseModel):
    model: str
    predictions: list[Prediction]
    ms: float


class Detection(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in the uploaded image's pixels")
    score: float
    label: int
    class_: str = Field(alias="class")


class DetectResponse(BaseModel):
    model: str
    width: int
    height: int
    detections: list[Detection]
    ms: float


ERRORS = {400: {"model": Error, "description": "empty, truncated or corrupt image"},
          404: {"model": Error, "description": "the served model is of the other kind (the detail names the "
                                               "endpoint to use)"},
          413: {"model": Error, "description": "body over --max-upload-mb"},
          415: {"model": Error, "description": "not an image"},
          422: {"description": "missing `file` field, or an image whose declared size is over the limit"}}
FILE = File(..., description="an image (JPEG, PNG, WebP, ...)")


def create_app(served: ServedModel, settings: ServeSettings) -> FastAPI:
    """The service for one loaded model. Its ``kind`` picks the endpoint (``classify``: ``POST /predict``,
    ``detect``: ``POST /detect``); the other endpoint answers 404 naming the right one."""
    # Pillow warns from 89 Mpx on; our own header check (decode_upload) refuses above --max-megapixels instead,
    # so the warning would only add a log line per hostile upload
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    # each inference thread runs its engine with its share of the cores (torch's count is per thread; ONNX
    # Runtime and OpenVINO engines got theirs when they were built)
    batcher = DynamicBatcher(served.run_batch, settings.max_batch, settings.max_wait_ms, settings.inference_threads,
                             initializer=torch.set_num_threads, initargs=(settings.engine_threads,))
    # Each decoding thread runs torch's preprocessing ops single-threaded: an image's resize is ~1 ms on one
    # thread but took ~40 ms with 2 OpenMP threads fighting over busy cores. Parallelism comes from the pool.
    decoders = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="effnet-decode",
                                  initializer=torch.set_num_threads, initargs=(1,))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        # uvicorn has already drained in-flight requests (SIGTERM): now stop the loop and the threads
        await batcher.stop()
        decoders.shutdown(wait=True)

    app = FastAPIOffline(title="effnet serve", summary=f"{served.name} ({served.kind})", lifespan=lifespan,
                         redoc_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def prepare(data: bytes, options: dict):
        return served.preprocess(decode_upload(data, settings.max_pixels), **options)

    async def run(file: UploadFile, **options) -> JSONResponse:
        """Decoded on a thread, then batched with whatever else is waiting; ImageRejected for a bad upload."""
        start = time.perf_counter()
        data = await file.read()
        x = await asyncio.get_running_loop().run_in_executor(decoders, prepare, data, options)
        answer = served.answer(await batcher.submit(x), **options)
        # returned as a response: FastAPI would otherwise validate and re-encode it with pydantic, on the
        # event loop, for every request (response_model still documents it)
        return JSONResponse({"model": served.name, **answer, "ms": round((time.perf_counter() - start) * 1000, 2)})

    @app.exception_handler(ImageRejected)
    async def rejected(request, exc: ImageRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.get("/health", summary="model name once it is loaded, and batching counters")
    async def health() -> dict:
        return {"status": "ok", "model": served.name, "kind": served.kind, "backend": served.backend,
                "endpoint": ENDPOINTS[served.kind], "max_batch": settings.max_batch,
                "infer_threads": settings.inference_threads, "threads": settings.engine_threads,
                "stats": vars(batcher.stats)}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    ROUTES[served.kind](app, run)
    _add_wrong_kind_routes(app, served)
    return app


def _predict_route(app: FastAPI, run) -> None:
    @app.post("/predict", response_model=PredictResponse, responses=ERRORS,
              summary="top-k classes of an uploaded image (multipart field `file`)")
    async def predict(file: UploadFile = FILE, topk: int = Query(5, ge=1, le=1000)) -> JSONResponse:
        return await run(file, topk=topk)


def _detect_route(app: FastAPI, run) -> None:
    @app.post("/detect", response_model=DetectResponse, responses=ERRORS,
              summary="boxes (x1, y1, x2, y2 in the image's pixels), scores and classes of the objects in an "
                      "uploaded image (multipart field `file`)")
    async def detect(file: UploadFile = FILE, score_threshold: float = Query(0.3, ge=0.0, le=1.0)) -> JSONResponse:
        return await run(file, score_threshold=score_threshold)


ROUTES = {"classify": _predict_route, "detect": _detect_route}  # each task's endpoint (keys: ENDPOINTS')


def _add_wrong_kind_routes(app: FastAPI, served: ServedModel) -> None:
    """``POST`` to the other kind's endpoint: 404 naming the right one, before the body is parsed."""

    def route(kind: str, path: str):
        detail = (f"{served.name} is {WHAT[served.kind]}, not {WHAT[kind]}: POST the image to "
                  f"{ENDPOINTS[served.kind]} ({path} is for {PLURAL[kind]})")

        async def wrong_kind() -> JSONResponse:
            return JSONResponse({"detail": detail}, status_code=404)
        return wrong_kind

    others = dict(ENDPOINTS)
    del others[served.kind]
    for kind, path in others.items():
        app.add_api_route(path, route(kind, path), methods=["POST"], include_in_schema=False)


def load_served(settings: ServeSettings) -> ServedModel:
    return load_model(settings.model, settings.pretrained, settings.backend, settings.calibration,
                      copies=settings.inference_threads, threads=settings.engine_threads)


def app_from_env() -> FastAPI:
    """Factory for each ``--workers`` process: settings travel as JSON in the environment."""
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    torch.set_num_threads(settings.engine_threads)  # workers share the cores
    return create_app(load_served(settings), settings)
