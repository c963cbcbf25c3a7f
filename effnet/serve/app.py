"""The FastAPI application: ``GET /health``, ``POST /predict`` (a classifier) or ``POST /detect`` (a detector),
the Open Inference Protocol's ``/v2`` routes, ``GET /metrics``, the page at ``/`` and OpenAPI docs at ``/docs``.

Decoding runs on a thread pool and inference on the batcher's threads, so the event loop only moves bytes.
Every image a request carries (``file`` parts, or the protocol's batch) is answered, in order, in effnet's one
result schema (:mod:`effnet.results`). The work a request may cause is bounded before it is done: the body's
size and arrival time, the number of requests in the server and of images in the queue (:mod:`.limits`), the
declared and the resized image size (:mod:`.decode`). A client's mistake is answered with a 4xx JSON error
(``{"detail": ...}`` on effnet's routes, ``{"error": ...}`` on ``/v2``) and logged as one access line, never a
traceback. Docs and page assets are served from the installed packages (fastapi-offline bundles Swagger UI),
so everything works without internet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from . import protocol as v2
from ..errors import UsageError
from .batching import DynamicBatcher, QueueFull
from .decode import ImageRejected, decode_upload
from .limits import Admission, BodySizeLimit, Gate, error_key
from .metrics import Metrics, MetricsMiddleware
from .models import ServedModel, load_model
from .settings import ServeSettings

STATIC = Path(__file__).parent / "static"
SETTINGS_ENV = "EFFNET_SERVE_SETTINGS"
ENDPOINTS = {"classify": "/predict", "detect": "/detect"}
WHAT = {"classify": "a classifier", "detect": "a detector"}
PLURAL = {"classify": "classifiers", "detect": "detectors"}
IMAGE_INPUT, TENSOR_INPUT = "image_bytes", "pixel_values"  # the protocol's two inputs: encoded images or tensors
MAX_ABS_INPUT = 1000.0  # a normalised image lies within a few units of 0: beyond this, the outputs overflow
log = logging.getLogger("effnet.serve")


class Error(BaseModel):
    detail: str


class Prediction(BaseModel):
    label: str = Field(description="class name")
    index: int = Field(description="the model's output index")
    score: float


class Classification(BaseModel):
    path: str | None = Field(None, description="the uploaded file's name, when it has one")
    predictions: list[Prediction]


class PredictResponse(BaseModel):
    model: str
    results: list[Classification] = Field(description="one per uploaded image, in the order sent")
    ms: float


class Detection(BaseModel):
    label: str = Field(description="class name")
    index: int = Field(description="the model's class index")
    score: float
    box: list[float] = Field(description="x1, y1, x2, y2 in the uploaded image's pixels")


class DetectionResult(BaseModel):
    path: str | None = None
    width: int
    height: int
    detections: list[Detection]


class DetectResponse(BaseModel):
    model: str
    results: list[DetectionResult] = Field(description="one per uploaded image, in the order sent")
    ms: float


BUSY = {"model": Error, "description": "server busy (queue or concurrency limit) or shutting down; see "
                                       "Retry-After", "headers": {"Retry-After": {"schema": {"type": "integer"}}}}
ERRORS = {400: {"model": Error, "description": "empty, truncated or corrupt image"},
          404: {"model": Error, "description": "the served model is of the other kind (the detail names the "
                                               "endpoint to use)"},
          408: {"model": Error, "description": "the body did not arrive within --body-timeout"},
          413: {"model": Error, "description": "body over --max-upload-mb, or more images than --max-queue"},
          415: {"model": Error, "description": "not an image"},
          422: {"description": "missing `file` field, or an image over the size limits"},
          503: BUSY}
V2_ERROR = {"model": v2.ProtocolErrorBody}
V2_ERRORS = {status: {**V2_ERROR, "description": text} for status, text in (
    (400, "malformed request, or an image that cannot be read"), (404, "no model of that name"),
    (408, "the body did not arrive within --body-timeout"),
    (413, "body over --max-upload-mb, or more images than --max-queue"), (415, "an image that is not an image"),
    (422, "an image over the size limits"))}
V2_ERRORS[503] = {**BUSY, "model": v2.ProtocolErrorBody}
FILE = File(..., min_length=1, description="one or more images (JPEG, PNG, WebP, ...): repeat the field for "
                                          "several")


def create_app(served: ServedModel, settings: ServeSettings) -> FastAPI:
    """The service for one loaded model. Its ``kind`` picks the endpoint (``classify``: ``POST /predict``,
    ``detect``: ``POST /detect``); the other endpoint answers 404 naming the right one."""
    # Pillow warns from 89 Mpx on; our own header check (decode_upload) refuses above --max-megapixels instead,
    # so the warning would only add a log line per hostile upload
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    metrics = Metrics(queue_depth=lambda: batcher.pending, in_flight=lambda: gate.in_flight)
    # each inference thread runs its engine with its share of the cores (torch's count is per thread; ONNX
    # Runtime and OpenVINO engines got theirs when they were built)
    batcher = DynamicBatcher(served.run_batch, settings.max_batch, settings.max_wait_ms, settings.inference_threads,
                             initializer=torch.set_num_threads, initargs=(settings.engine_threads,),
                             max_queue=settings.queue_limit, on_batch=metrics.observe_batch)
    # Each decoding thread runs torch's preprocessing ops single-threaded: an image's resize is ~1 ms on one
    # thread but took ~40 ms with 2 OpenMP threads fighting over busy cores. Parallelism comes from the pool.
    decoders = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="effnet-decode",
                                  initializer=torch.set_num_threads, initargs=(1,))
    name = settings.name or served.name

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        _on_shutdown_signal(gate.begin_shutdown)
        yield
        # uvicorn has answered the accepted requests (SIGTERM): now stop the loop and the threads
        await batcher.stop()
        decoders.shutdown(wait=True)

    app = FastAPIOffline(title="effnet serve", summary=f"{served.name} ({served.kind})", lifespan=lifespan,
                         redoc_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    inference = {ENDPOINTS[served.kind], f"/v2/models/{name}/infer"}
    gate = Gate(inference.__contains__, batcher, settings.concurrency_limit, settings.body_timeout)
    app.add_middleware(Admission, gate=gate)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def prepare(data: bytes, options: dict):
        return served.preprocess(decode_upload(data, settings.max_pixels, served.refuse_size), **options)

    def check_count(count: int) -> None:
        if not count:
            raise ImageRejected(400, "no image in the request")
        if count > settings.queue_limit:  # could never be queued
            raise ImageRejected(413, f"{count} images in one request; at most {settings.queue_limit} (--max-queue)")
        batcher.check_room(count)  # before any decoding: a full queue refuses at once

    async def run_images(images: list[bytes], names: list[str | None], options: dict) -> list:
        """Each image decoded on a thread, then all of them queued for the batcher together; in order."""
        check_count(len(images))
        loop = asyncio.get_running_loop()

        async def one(i: int, data: bytes):
            try:
                return await loop.run_in_executor(decoders, prepare, data, options)
            except ImageRejected as exc:
                if len(images) == 1:
                    raise
                raise ImageRejected(exc.status, f"image {i + 1} ({names[i] or 'unnamed'}): {exc}") from None

        return await batcher.submit_all(await asyncio.gather(*[one(i, data) for i, data in enumerate(images)]))

    async def run_inputs(inputs: list) -> list:
        """Already preprocessed inputs (the protocol's FP32 tensor), queued together; in order."""
        check_count(len(inputs))
        return await batcher.submit_all(inputs)

    async def answer_uploads(files: list[UploadFile], **options) -> JSONResponse:
        start = time.perf_counter()
        datas = [await f.read() for f in files]
        names = [f.filename or None for f in files]
        outputs = await run_images(datas, names, options)
        results = [served.answer(out, path=n, **options) for out, n in zip(outputs, names)]
        # returned as a response: FastAPI would otherwise validate and re-encode it with pydantic, on the
        # event loop, for every request (response_model still documents it)
        return JSONResponse({"model": served.name, "results": results,
                             "ms": round((time.perf_counter() - start) * 1000, 2)})

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

    @app.get("/health", summary="model name once it is loaded, limits and batching counters")
    async def health() -> dict:
        return {"status": "ok", "model": served.name, "kind": served.kind, "backend": served.backend,
                "endpoint": ENDPOINTS[served.kind], "protocol_name": name, "max_batch": settings.max_batch,
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

    ROUTES[served.kind](app, answer_uploads)
    _add_wrong_kind_routes(app, served)
    _add_protocol_routes(app, served, name, run_images, run_inputs)
    return app


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


def _predict_route(app: FastAPI, answer_uploads) -> None:
    @app.post("/predict", response_model=PredictResponse, responses=ERRORS,
              summary="top-k classes of each uploaded image (multipart field `file`, repeated for several)")
    async def predict(file: list[UploadFile] = FILE, topk: int = Query(5, ge=1, le=1000)) -> JSONResponse:
        return await answer_uploads(file, topk=topk)


def _detect_route(app: FastAPI, answer_uploads) -> None:
    @app.post("/detect", response_model=DetectResponse, responses=ERRORS,
              summary="boxes (x1, y1, x2, y2 in the image's pixels), scores and classes of the objects in each "
                      "uploaded image (multipart field `file`, repeated for several)")
    async def detect(file: list[UploadFile] = FILE,
                     score_threshold: float = Query(0.3, ge=0.0, le=1.0)) -> JSONResponse:
        return await answer_uploads(file, score_threshold=score_threshold)


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


# ------------------------------------------------------------------ the Open Inference Protocol (KServe v2)

def _options(served: ServedModel, parameters: dict) -> dict:
    """The request's ``parameters`` this model reads (its own ``options_from``), or a 400."""
    try:
        return served.options_from(parameters)
    except UsageError as exc:
        raise v2.ProtocolError(f"parameters.{exc}") from None


def _add_protocol_routes(app: FastAPI, served: ServedModel, name: str, run_images, run_inputs) -> None:
    res = served.input_shape
    inputs = [v2.TensorMetadata(name=IMAGE_INPUT, datatype="BYTES", shape=[-1]),
              v2.TensorMetadata(name=TENSOR_INPUT, datatype="FP32", shape=[-1, *res])]
    outputs = [v2.TensorMetadata(name=n, datatype=d, shape=s) for n, d, s in served.output_metadata()]
    datatypes = {o.name: o.datatype for o in outputs}
    try:
        effnet_version = version("effnet")
    except PackageNotFoundError:
        effnet_version = "unknown"

    def check_name(model: str) -> None:
        if model != name:
            raise v2.ProtocolError(f"unknown model {model!r}: this server serves {name!r}", status=404)

    @app.get("/v2", response_model=v2.ServerMetadata, summary="server metadata (Open Inference Protocol)")
    async def server_metadata() -> dict:
        return {"name": "effnet", "version": effnet_version, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live", response_model=v2.Live, summary="the server is up")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", response_model=v2.Ready, summary="the server can answer inference requests")
    async def ready() -> dict:
        return {"ready": True}

    @app.get("/v2/models/{model}", response_model=v2.ModelMetadata, responses={404: V2_ERRORS[404]},
             summary=f"the model's inputs and outputs: give exactly one input, `{IMAGE_INPUT}` (BYTES, encoded "
                     f"images) or `{TENSOR_INPUT}` (FP32, preprocessed images)")
    async def model_metadata(model: str) -> dict:
        check_name(model)
        return {"name": name, "versions": ["1"], "platform": f"effnet_{served.kind}",
                "inputs": [i.model_dump() for i in inputs], "outputs": [o.model_dump() for o in outputs]}

    @app.get("/v2/models/{model}/ready", response_model=v2.ModelReady, responses={404: V2_ERRORS[404]},
             summary="the model is loaded")
    async def model_ready(model: str) -> dict:
        check_name(model)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{model}/infer", response_model=v2.InferResponse, responses={
                  **V2_ERRORS, 200: {"content": {"application/octet-stream": {
                      "schema": {"type": "string", "format": "binary"}}}, "description": "with binary outputs: "
                      "the JSON part, then the tensors (Inference-Header-Content-Length says where)"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/InferRequest"}, "example": _example_request()}}}},
              summary="run the model on a batch: JSON tensors or the binary tensor data extension")
    async def infer(model: str, request: Request) -> Response:
        check_name(model)
        body = await request.body()
        req = v2.parse_request(body, request.headers.get(v2.HEADER_LENGTH))
        options = _options(served, req.parameters)
        if len(req.inputs) != 1 or req.inputs[0].name not in (IMAGE_INPUT, TENSOR_INPUT):
            raise v2.ProtocolError(f"give exactly one input: {IMAGE_INPUT} (BYTES, encoded images) or "
                                   f"{TENSOR_INPUT} (FP32, shape [N, {', '.join(map(str, res))}])")
        tensor = req.inputs[0]
        if tensor.name == IMAGE_INPUT:
            if tensor.datatype != "BYTES":
                raise v2.ProtocolError(f"{IMAGE_INPUT} must be BYTES, got {tensor.datatype}")
            images = [v if tensor.binary else v2.decode_base64(v, IMAGE_INPUT) for v in tensor.value.reshape(-1)]
            found = await run_images(images, [None] * len(images), options)
        else:
            found = await run_tensors(tensor, options)
        tensors = served.output_tensors(found, **options)
        content, header_length = v2.encode_response(name, req, tensors, datatypes)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(header_length)})

    async def run_tensors(tensor: v2.Tensor, options: dict) -> list:
        if tensor.datatype != "FP32" or tensor.value.ndim != 4 or tuple(tensor.value.shape[1:]) != res:
            raise v2.ProtocolError(f"{TENSOR_INPUT} must be FP32 of shape [N, {', '.join(map(str, res))}], got "
                                   f"{tensor.datatype} {list(tensor.value.shape)}")
        if not np.all(np.abs(tensor.value) <= MAX_ABS_INPUT):  # also false for NaN
            raise v2.ProtocolError(f"{TENSOR_INPUT} must be finite normalised values within +-{MAX_ABS_INPUT:g}")
        x = torch.from_numpy(np.array(tensor.value, dtype=np.float32))
        return await run_inputs([served.tensor_input(row, **options) for row in x])

    _complete_openapi(app, name)


def _example_request() -> dict:
    """An inference request the docs show (and the fuzzer starts from): one small gray PNG, base64 in JSON."""
    import base64
    import io

    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, "PNG")
    return {"inputs": [{"name": IMAGE_INPUT, "shape": [1], "datatype": "BYTES",
                        "data": [base64.b64encode(buf.getvalue()).decode()]}], "parameters": {"topk": 3}}


def _complete_openapi(app: FastAPI, name: str) -> None:
    """The infer route reads its body itself (JSON or JSON + binary): its request schema is added by hand; the
    ``{model}`` of the /v2 routes can only be the served model's name."""
    openapi = app.openapi

    def completed():
        if app.openapi_schema is None:
            schema = openapi()
            request = v2.InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(request.pop("$defs", {}))
            components["InferRequest"] = request
            for path, operations in schema["paths"].items():
                for operation in operations.values() if path.startswith("/v2/models/") else ():
                    for parameter in operation.get("parameters", []):
                        if parameter["name"] == "model":
                            parameter["schema"] = {"type": "string", "enum": [name], "title": "Model"}
        return app.openapi_schema
    app.openapi = completed


def load_served(settings: ServeSettings) -> ServedModel:
    return load_model(settings.model, settings.pretrained, settings.backend, settings.calibration,
                      copies=settings.inference_threads, threads=settings.engine_threads)


def app_from_env() -> FastAPI:
    """Factory for each ``--workers`` process: settings travel as JSON in the environment."""
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    torch.set_num_threads(settings.engine_threads)  # workers share the cores
    return create_app(load_served(settings), settings)
