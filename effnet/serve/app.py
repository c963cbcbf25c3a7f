"""The FastAPI application: ``GET /health``, ``POST /predict``, the page at ``/`` and OpenAPI docs at ``/docs``.

Decoding runs on a thread pool and inference on the batcher's thread, so the event loop only moves bytes.
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
from pydantic import BaseModel

from .batching import DynamicBatcher
from .decode import ImageRejected, decode_upload
from .limits import BodySizeLimit
from .models import ServedModel, load_classifier
from .settings import ServeSettings

STATIC = Path(__file__).parent / "static"
SETTINGS_ENV = "EFFNET_SERVE_SETTINGS"
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


ERRORS = {400: {"model": Error, "description": "empty, truncated or corrupt image"},
          413: {"model": Error, "description": "body over --max-upload-mb"},
          415: {"model": Error, "description": "not an image"},
          422: {"description": "missing `file` field, or an image whose declared size is over the limit"}}


def create_app(served: ServedModel, settings: ServeSettings) -> FastAPI:
    """The service for one loaded model. Its ``kind`` picks the endpoint (``classify``: ``POST /predict``)."""
    # Pillow warns from 89 Mpx on; our own header check (decode_upload) refuses above --max-megapixels instead,
    # so the warning would only add a log line per hostile upload
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    batcher = DynamicBatcher(served.run_batch, settings.max_batch, settings.max_wait_ms)
    # Each decoding thread runs torch's preprocessing ops single-threaded (torch's thread count is per thread):
    # an image's resize is ~1 ms on one thread but took ~40 ms with 2 OpenMP threads fighting over busy cores.
    # Parallelism comes from the pool, one image per thread.
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

    def prepare(data: bytes):
        return served.preprocess(decode_upload(data, settings.max_pixels))

    async def run(file: UploadFile) -> object:
        """Decoded on a thread, then batched with whatever else is waiting; ImageRejected for a bad upload."""
        data = await file.read()
        x = await asyncio.get_running_loop().run_in_executor(decoders, prepare, data)
        return await batcher.submit(x)

    @app.exception_handler(ImageRejected)
    async def rejected(request, exc: ImageRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.get("/health", summary="model name once it is loaded, and batching counters")
    async def health() -> dict:
        return {"status": "ok", "model": served.name, "kind": served.kind, "backend": served.backend,
                "endpoint": ENDPOINTS[served.kind], "max_batch": settings.max_batch,
                "stats": vars(batcher.stats)}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    if served.kind == "classify":
        @app.post("/predict", response_model=PredictResponse, responses=ERRORS,
                  summary="top-k classes of an uploaded image (multipart field `file`)")
        async def predict(file: UploadFile = File(..., description="an image (JPEG, PNG, WebP, ...)"),
                          topk: int = Query(5, ge=1, le=1000)) -> dict:
            start = time.perf_counter()
            output = await run(file)
            return {"model": served.name, **served.answer(output, topk=topk),
                    "ms": round((time.perf_counter() - start) * 1000, 2)}
    return app


ENDPOINTS = {"classify": "/predict"}  # a detector adds "detect": "/detect" with its route above


def load_served(settings: ServeSettings) -> ServedModel:
    return load_classifier(settings.model, settings.pretrained, settings.backend, settings.calibration)


def app_from_env() -> FastAPI:
    """Factory for each ``--workers`` process: settings travel as JSON in the environment."""
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))  # workers share the cores
    return create_app(load_served(settings), settings)
