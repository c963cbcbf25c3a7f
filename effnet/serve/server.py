"""Run the service with uvicorn: one process, or ``workers`` processes sharing the port.

uvicorn's HTTP/1.1 protocol (h11) closes a keep-alive connection that stays idle after a response, but not
one that never completes its first request head: :class:`IdleTimeoutH11Protocol` gives every request head
``--idle-timeout`` seconds to arrive (a half-sent head gets 408, then the connection is closed). The body has
its own deadline (``--body-timeout``, :class:`effnet.serve.limits.Admission`).
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import contextmanager

from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import SETTINGS_ENV, create_app, load_served
from .models import ServedModel
from .settings import ServeSettings

_BODY_408 = b'{"detail": "request head not received within --idle-timeout"}'
TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
               b"content-length: %d\r\n\r\n%s" % (len(_BODY_408), _BODY_408))


class IdleTimeoutH11Protocol(H11Protocol):
    """h11 with a deadline for each request head (uvicorn's keep-alive timeout, reused)."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request's head must come in time too

    def connection_lost(self, exc) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timeout)

    def _head_timeout(self) -> None:
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return  # a request is being answered: its body has its own deadline
        if self.conn.trailing_data[0]:  # part of a head arrived: say why the connection ends
            self.transport.write(TIMEOUT_408)
        self.transport.close()


@contextmanager
def _graceful_signals():
    """uvicorn turns SIGTERM / SIGINT into a drain-then-stop and re-raises the signal once stopped; a no-op
    handler here makes that last step a clean exit (status 0) instead of a kill."""
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def serve(settings: ServeSettings, served: ServedModel | None = None) -> None:
    """Serve until SIGTERM / SIGINT: uploads still arriving are cut off, requests already read are answered
    (for at most ``--shutdown-timeout`` seconds), then the process exits 0.

    The model is loaded here first even with several workers, so that a bad model name fails with one line
    before any process starts, and an exported backend (ONNX) is cached once rather than by each worker.
    """
    import uvicorn

    served = served or load_served(settings)
    common = dict(host=settings.host, port=settings.port, timeout_graceful_shutdown=settings.shutdown_timeout,
                  access_log=settings.access_log, log_level="info", http=IdleTimeoutH11Protocol,
                  timeout_keep_alive=settings.idle_timeout,
                  # a backstop for connections (idle ones included) far above the request limit, which
                  # answers 503 with Retry-After itself
                  limit_concurrency=max(1000, 4 * settings.concurrency_limit))
    with _graceful_signals():
        if settings.workers > 1:
            del served
            os.environ[SETTINGS_ENV] = settings.to_json()
            # each worker loads the model before it answers uvicorn's health pings: give it time, or the
            # supervisor takes a worker that is still loading for dead and replaces it
            uvicorn.run("effnet.serve.app:app_from_env", factory=True, workers=settings.workers,
                        timeout_worker_healthcheck=120, **common)
        else:
            uvicorn.run(create_app(served, settings), **common)
