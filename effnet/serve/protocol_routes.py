"""The Open Inference Protocol's ``/v2`` routes (KServe v2 REST) for the served model: metadata, health and
``infer`` with an image batch (``image_bytes``, BYTES) or a preprocessed tensor (``pixel_values``, FP32). The
request's ``parameters`` are the task's route options, checked by its :class:`~effnet.taskspec.Route`; the
outputs are the served model's (``output_metadata`` / ``output_tensors``). Bodies are parsed and written by
:mod:`.protocol`."""

from __future__ import annotations

import base64
import io
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import Response
from PIL import Image

from . import protocol as v2
from ..deploy.engines import ServedModel
from ..errors import UsageError
from .inference import Inference
from .routes import BUSY

IMAGE_INPUT, TENSOR_INPUT = "image_bytes", "pixel_values"  # the protocol's two inputs: encoded images or tensors
MAX_ABS_INPUT = 1000.0  # a normalised image lies within a few units of 0: beyond this, the outputs overflow
V2_ERROR = {"model": v2.ProtocolErrorBody}
V2_ERRORS = {status: {**V2_ERROR, "description": text} for status, text in (
    (400, "malformed request, or an image that cannot be read"), (404, "no model of that name"),
    (408, "the body did not arrive within --body-timeout"),
    (413, "body over --max-upload-mb, or more images than --max-queue"), (415, "an image that is not an image"),
    (422, "an image over the size limits, or outputs too large to answer in one request"))}
V2_ERRORS[503] = {**BUSY, "model": v2.ProtocolErrorBody}
INFER_OK = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "description": "with binary outputs: the JSON part, then the tensors (Inference-Header-Content-Length "
                           "says where)"}


def _effnet_version() -> str:
    try:
        return version("effnet")
    except PackageNotFoundError:
        return "unknown"


class ProtocolModel:
    """The served model as the protocol sees it: its name, its two inputs, its outputs, an inference call."""

    def __init__(self, served: ServedModel, name: str, inference: Inference) -> None:
        self.served, self.name, self.inference = served, name, inference
        self.shape = served.input_shape
        self.inputs = [v2.TensorMetadata(name=IMAGE_INPUT, datatype="BYTES", shape=[-1]),
                       v2.TensorMetadata(name=TENSOR_INPUT, datatype="FP32", shape=[-1, *self.shape])]
        self.outputs = [v2.TensorMetadata(name=n, datatype=d, shape=s) for n, d, s in served.output_metadata()]
        self.datatypes = {o.name: o.datatype for o in self.outputs}

    def check_name(self, model: str) -> None:
        if model != self.name:
            raise v2.ProtocolError(f"unknown model {model!r}: this server serves {self.name!r}", status=404)

    def metadata(self) -> dict:
        return {"name": self.name, "versions": ["1"], "platform": f"effnet_{self.served.task.name}",
                "inputs": [i.model_dump() for i in self.inputs], "outputs": [o.model_dump() for o in self.outputs]}

    def options(self, parameters: dict) -> dict:
        """The request's ``parameters`` the task's route reads (checked there), or a 400."""
        try:
            return self.served.task.route.parse(parameters)
        except UsageError as exc:
            raise v2.ProtocolError(f"parameters.{exc}") from None

    async def infer(self, body: bytes, header_length: str | None) -> Response:
        req = v2.parse_request(body, header_length)
        options = self.options(req.parameters)
        if len(req.inputs) != 1 or req.inputs[0].name not in (IMAGE_INPUT, TENSOR_INPUT):
            raise v2.ProtocolError(f"give exactly one input: {IMAGE_INPUT} (BYTES, encoded images) or "
                                   f"{TENSOR_INPUT} (FP32, shape [N, {', '.join(map(str, self.shape))}])")
        tensor = req.inputs[0]
        found = await (self.run_images(tensor, options) if tensor.name == IMAGE_INPUT
                       else self.run_tensors(tensor, options))
        try:
            tensors = self.served.output_tensors(found, **options)
        except UsageError as exc:  # outputs the model will not pack into tensors for this request (too large)
            raise v2.ProtocolError(str(exc), status=422) from None
        content, header = v2.encode_response(self.name, req, tensors, self.datatypes)
        if header is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(header)})

    async def run_images(self, tensor: v2.Tensor, options: dict) -> list:
        if tensor.datatype != "BYTES":
            raise v2.ProtocolError(f"{IMAGE_INPUT} must be BYTES, got {tensor.datatype}")
        images = [v if tensor.binary else v2.decode_base64(v, IMAGE_INPUT) for v in tensor.value.reshape(-1)]
        return await self.inference.run_images(images, [None] * len(images), options)

    async def run_tensors(self, tensor: v2.Tensor, options: dict) -> list:
        if tensor.datatype != "FP32" or tensor.value.ndim != 4 or tuple(tensor.value.shape[1:]) != self.shape:
            raise v2.ProtocolError(f"{TENSOR_INPUT} must be FP32 of shape [N, {', '.join(map(str, self.shape))}], "
                                   f"got {tensor.datatype} {list(tensor.value.shape)}")
        if not np.all(np.abs(tensor.value) <= MAX_ABS_INPUT):  # also false for NaN
            raise v2.ProtocolError(f"{TENSOR_INPUT} must be finite normalised values within +-{MAX_ABS_INPUT:g}")
        x = torch.from_numpy(np.array(tensor.value, dtype=np.float32))
        return await self.inference.run_inputs([self.served.tensor_input(row, **options) for row in x])


def add_protocol_routes(app: FastAPI, pm: ProtocolModel) -> None:
    _add_health_routes(app, pm)

    @app.post("/v2/models/{model}/infer", response_model=v2.InferResponse, responses={**V2_ERRORS, 200: INFER_OK},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/InferRequest"}, "example": example_request(pm)}}}},
              summary="run the model on a batch: JSON tensors or the binary tensor data extension")
    async def infer(model: str, request: Request) -> Response:
        pm.check_name(model)
        return await pm.infer(await request.body(), request.headers.get(v2.HEADER_LENGTH))

    _complete_openapi(app, pm.name)


def _add_health_routes(app: FastAPI, pm: ProtocolModel) -> None:
    effnet_version = _effnet_version()

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
        pm.check_name(model)
        return pm.metadata()

    @app.get("/v2/models/{model}/ready", response_model=v2.ModelReady, responses={404: V2_ERRORS[404]},
             summary="the model is loaded")
    async def model_ready(model: str) -> dict:
        pm.check_name(model)
        return {"name": pm.name, "ready": True}


def example_request(model: ProtocolModel) -> dict:
    """An inference request the docs show (and the fuzzer starts from): one small gray PNG, base64 in JSON, with
    the task's options at their defaults."""
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, "PNG")
    return {"inputs": [{"name": IMAGE_INPUT, "shape": [1], "datatype": "BYTES",
                        "data": [base64.b64encode(buf.getvalue()).decode()]}],
            "parameters": model.served.task.route.defaults()}


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

