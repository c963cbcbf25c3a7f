"""The Open Inference Protocol (KServe v2) REST API: request and response bodies, JSON tensors and the binary
tensor data extension, so that ``tritonclient.http`` with its defaults and KServe's ``InferenceRESTClient``
talk to ``effnet serve`` unchanged.

Spec: https://github.com/kserve/open-inference-protocol (``rest_predict_v2``) and Triton's binary tensor data
extension: a request or response whose JSON part is followed by raw tensors says the JSON's length in the
``Inference-Header-Content-Length`` header, and each tensor sent that way says its size in
``parameters.binary_data_size``. BYTES elements are sent raw as ``<4-byte little-endian length><bytes>``;
in JSON a BYTES element is a string (for encoded images: base64, JSON cannot carry raw bytes).

This module is pure: bytes in, numpy tensors out, and back; the routes are in :mod:`effnet.serve.app`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

HEADER_LENGTH = "inference-header-content-length"  # the binary data extension's header (case-insensitive)
DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
          "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
          "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}
Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                   "FP32", "FP64", "BYTES"]
MAX_DIMS = 8


class ProtocolError(ValueError):
    """A malformed inference request: answered ``status`` with ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ bodies (pydantic: parsing and the OpenAPI)

class Parameters(BaseModel):
    model_config = ConfigDict(extra="allow")
    binary_data_size: int | None = Field(None, ge=0, description="bytes of this tensor after the JSON part")
    binary_data: bool | None = Field(None, description="answer this output as binary data")


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    shape: list[int] = Field(max_length=MAX_DIMS)
    datatype: Datatype
    parameters: Parameters | None = None
    data: list[Any] | None = Field(None, description="the elements, flat or nested, row-major; BYTES: strings "
                                                      "(an encoded image: base64)")


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    parameters: Parameters | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="the served task's options (`GET /health` lists them: a classifier's `topk`, a "
                          "detector's `score_threshold`), `binary_data_output` (all outputs as binary data)")
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ProtocolErrorBody(BaseModel):
    error: str


# ------------------------------------------------------------------ requests

@dataclass
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    value: np.ndarray  # BYTES: an object array of bytes
    binary: bool  # sent as binary data (else as JSON: BYTES elements are then strings)


@dataclass
class Request:
    id: str | None
    parameters: dict[str, Any]
    inputs: list[Tensor]
    outputs: list[RequestOutput] | None


def parse_request(body: bytes, header_length: str | None) -> Request:
    """The inference request in ``body`` (JSON, then binary tensors when ``header_length`` is given)."""
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {header_length!r} is not a length within the "
                                f"{len(body)}-byte body")
        head, binary = body[:int(header_length)], memoryview(body)[int(header_length):]
    else:
        head, binary = body, memoryview(b"")
    try:
        request = InferRequest.model_validate_json(head)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ProtocolError(f"invalid inference request: {where}: {err['msg']}") from None
    inputs, offset = [], 0
    for spec in request.inputs:
        size = spec.parameters.binary_data_size if spec.parameters else None
        if size is not None:
            if spec.data is not None:
                raise ProtocolError(f"input {spec.name!r} has both data and binary_data_size")
            if offset + size > len(binary):
                raise ProtocolError(f"input {spec.name!r}: binary_data_size {size} runs past the body's end")
            value = _from_binary(spec, binary[offset:offset + size])
            offset += size
        elif spec.data is not None:
            value = _from_json(spec)
        else:
            raise ProtocolError(f"input {spec.name!r} has neither data nor parameters.binary_data_size")
        inputs.append(Tensor(spec.name, spec.datatype, tuple(spec.shape), value, size is not None))
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes after the last binary input")
    return Request(request.id, dict(request.parameters or {}), inputs, request.outputs)


def _elements(spec: RequestInput) -> int:
    if any(d < 0 for d in spec.shape):
        raise ProtocolError(f"input {spec.name!r}: shape {spec.shape} has a negative dimension")
    return math.prod(spec.shape)


def _from_binary(spec: RequestInput, raw: memoryview) -> np.ndarray:
    count = _elements(spec)
    if spec.datatype == "BYTES":
        items, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise ProtocolError(f"input {spec.name!r}: BYTES element length cut off")
            (length,) = struct.unpack_from("<I", raw, pos)
            if pos + 4 + length > len(raw):
                raise ProtocolError(f"input {spec.name!r}: BYTES element of {length} bytes runs past its data")
            items.append(bytes(raw[pos + 4:pos + 4 + length]))
            pos += 4 + length
        if len(items) != count:
            raise ProtocolError(f"input {spec.name!r}: {len(items)} BYTES elements for shape {spec.shape}")
        return _bytes_array(items).reshape(spec.shape)
    dtype = np.dtype(DTYPES[spec.datatype]).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(f"input {spec.name!r}: {len(raw)} bytes for shape {spec.shape} of {spec.datatype} "
                            f"({count * dtype.itemsize} expected)")
    return np.frombuffer(raw, dtype=dtype).reshape(spec.shape)


def _bytes_array(items: list[bytes]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _flatten(data: list) -> list:
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _from_json(spec: RequestInput) -> np.ndarray:
    count, flat = _elements(spec), _flatten(spec.data)
    if len(flat) != count:
        raise ProtocolError(f"input {spec.name!r}: {len(flat)} elements for shape {spec.shape}")
    if spec.datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise ProtocolError(f"input {spec.name!r}: BYTES elements in JSON must be strings")
        return _bytes_array([v.encode() for v in flat]).reshape(spec.shape)
    kind = bool if spec.datatype == "BOOL" else (float if spec.datatype.startswith("FP") else int)
    if not all(isinstance(v, (int, float)) and (kind is float or isinstance(v, kind) or (
            kind is int and not isinstance(v, bool))) for v in flat):
        raise ProtocolError(f"input {spec.name!r}: {spec.datatype} elements must be {kind.__name__}s")
    try:
        return np.array(flat, dtype=DTYPES[spec.datatype]).reshape(spec.shape)
    except OverflowError:
        raise ProtocolError(f"input {spec.name!r}: a value out of range for {spec.datatype}") from None


def decode_base64(value: bytes, name: str) -> bytes:
    """A JSON BYTES element carrying binary content (an encoded image) is base64."""
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ProtocolError(f"input {name!r}: a BYTES element sent as JSON must be base64 (or send it as binary "
                            "data)") from None


# ------------------------------------------------------------------ responses

def encode_response(model_name: str, request: Request, tensors: dict[str, np.ndarray],
                    datatypes: dict[str, str]) -> tuple[bytes, int | None]:
    """The response body for ``tensors`` (those the request asked for, all by default), and the JSON part's
    length when binary data follows it (for the ``Inference-Header-Content-Length`` header)."""
    binary_default = bool(request.parameters.get("binary_data_output", False))
    if request.outputs:
        unknown = [o.name for o in request.outputs if o.name not in tensors]
        if unknown:
            raise ProtocolError(f"unknown output {unknown[0]!r}; this model has {', '.join(tensors)}")
        wanted = [(o.name, bool(o.parameters.binary_data) if o.parameters and o.parameters.binary_data is not None
                   else binary_default) for o in request.outputs]
    else:
        wanted = [(name, binary_default) for name in tensors]
    outputs, blobs = [], []
    for name, binary in wanted:
        value = tensors[name]
        out: dict[str, Any] = {"name": name, "shape": list(value.shape), "datatype": datatypes[name]}
        if binary:
            blob = _to_binary(value, datatypes[name])
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = ([v.decode(errors="replace") for v in value.reshape(-1)] if datatypes[name] == "BYTES"
                           else value.reshape(-1).tolist())
        outputs.append(out)
    head = {"model_name": model_name, "outputs": outputs}
    if request.id is not None:
        head["id"] = request.id
    text = json.dumps(head, separators=(",", ":")).encode()
    return (text + b"".join(blobs), len(text)) if blobs else (text, None)


def _to_binary(value: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in value.reshape(-1))
    return np.ascontiguousarray(value, dtype=np.dtype(DTYPES[datatype]).newbyteorder("<")).tobytes()
