"""Admission control and upload limits, as ASGI middleware: they act before the body is read or parsed.

:class:`BodySizeLimit`: Starlette parses (and spools to disk) the whole multipart form before an endpoint
runs, so a declared ``Content-Length`` over the limit is answered 413 before a byte of the body is read, and
a body without one (chunked) is counted as it arrives and cut off at the limit.

:class:`Admission`, for the inference routes only: at most ``max_concurrency`` such requests in the server
(reading, decoding, waiting, running) and none while the batch queue is full: 503 with ``Retry-After`` before
the body is read (uvicorn reads and drops the rest of the body, so the client still gets its answer); the
whole body must arrive within ``body_timeout`` seconds (408, connection closed: a stalled upload holds
nothing for long); at shutdown, uploads still arriving are cut off at once (503) so that SIGTERM ends the
server within seconds whatever clients do, while requests already read are answered.

No well-kept package does just this for Starlette (uvicorn's ``limit_concurrency`` answers a plain-text 503
without ``Retry-After`` and counts idle keep-alive connections; it has no body timeout), hence these lines.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from starlette.exceptions import HTTPException

from .batching import DynamicBatcher, QueueFull


class BodySizeLimit:
    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"upload too large: the limit is {self.max_bytes / 1024 / 1024:g} MB (--max-upload-mb)"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _json_error(send, 400, "invalid Content-Length header", scope["path"])
            if int(declared) > self.max_bytes:
                return await _json_error(send, 413, self._too_large(), scope["path"])
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises an HTTPException met while parsing the body: it becomes a 413 JSON answer
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, counting_receive, send)


def error_key(path: str) -> str:
    """Errors are ``{"error": ...}`` on the Open Inference Protocol's routes, ``{"detail": ...}`` (FastAPI's)
    on effnet's own."""
    return "error" if path.startswith("/v2") else "detail"


async def _json_error(send, status: int, detail: str, path: str = "", close: bool = True,
                      headers: tuple = ()) -> None:
    body = json.dumps({error_key(path): detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status,
                "headers": head + ([(b"connection", b"close")] if close else [])})
    await send({"type": "http.response.body", "body": body})


class Gate:
    """The admission state the middleware keeps and the app reads (requests in flight, shutting down)."""

    def __init__(self, is_inference: Callable[[str], bool], batcher: DynamicBatcher, max_concurrency: int,
                 body_timeout: float) -> None:
        self.is_inference, self.batcher = is_inference, batcher
        self.max_concurrency, self.body_timeout = max_concurrency, body_timeout
        self.in_flight = 0
        self.stopping: asyncio.Event | None = None  # set by begin_shutdown (created on the server's loop)

    def begin_shutdown(self) -> None:
        if self.stopping is not None:
            self.stopping.set()

    def _busy(self) -> str | None:
        if self.in_flight >= self.max_concurrency:
            return (f"server busy: {self.in_flight} inference requests in progress, the limit is "
                    f"{self.max_concurrency} (--max-concurrency); retry later")
        try:
            self.batcher.check_room(1)
        except QueueFull as exc:
            return str(exc)
        return None

    async def admit(self, app, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.is_inference(scope["path"]):
            return await app(scope, receive, send)
        if self.stopping is None:
            self.stopping = asyncio.Event()
        path = scope["path"]
        if self.stopping.is_set():
            return await _json_error(send, 503, "server shutting down", path)
        busy = self._busy()
        if busy:
            retry = str(self.batcher.retry_after()).encode()
            return await _json_error(send, 503, busy, path, close=False, headers=((b"retry-after", retry),))
        self.in_flight += 1
        try:
            await app(scope, self._timed(receive), send)
        finally:
            self.in_flight -= 1

    def _timed(self, receive):
        """``receive`` that raises 408 once the body is late and 503 once the server is stopping (only until
        the body is complete: an answered request is never cut off)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        complete = False

        async def timed_receive():
            nonlocal complete
            if complete:
                return await receive()
            message, stop = asyncio.ensure_future(receive()), asyncio.ensure_future(self.stopping.wait())
            try:
                done, _ = await asyncio.wait({message, stop}, timeout=max(0.0, deadline - loop.time()),
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
            if message in done:
                result = message.result()
                complete = result["type"] != "http.request" or not result.get("more_body", False)
                return result
            message.cancel()
            if stop in done:
                raise HTTPException(503, "server shutting down: the upload was not complete",
                                    headers={"connection": "close"})
            raise HTTPException(408, f"request body not received within {self.body_timeout:g} s (--body-timeout)",
                                headers={"connection": "close"})
        return timed_receive


class Admission:
    """The ASGI middleware of a :class:`Gate`."""

    def __init__(self, app, gate: Gate) -> None:
        self.app, self.gate = app, gate

    async def __call__(self, scope, receive, send) -> None:
        await self.gate.admit(self.app, scope, receive, send)
