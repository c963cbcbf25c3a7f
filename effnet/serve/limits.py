"""Refuse a request body over the upload limit while it streams in, not after it was stored.

Starlette parses (and spools to disk) the whole multipart form before an endpoint runs, so the limit is an
ASGI middleware: a declared ``Content-Length`` over the limit is answered 413 before a byte of the body is
read, and a body without one (chunked) is counted as it arrives and cut off at the limit. No well-kept
package does just this for Starlette, hence these few lines.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException


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
                return await _json_error(send, 400, "invalid Content-Length header")
            if int(declared) > self.max_bytes:
                return await _json_error(send, 413, self._too_large())
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


async def _json_error(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
