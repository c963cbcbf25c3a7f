"""Run the service with uvicorn: one process, or ``workers`` processes sharing the port."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

from .app import SETTINGS_ENV, create_app, load_served
from .models import ServedModel
from .settings import ServeSettings


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
    """Serve until SIGTERM / SIGINT; in-flight requests finish first (for at most 30 s).

    The model is loaded here first even with several workers, so that a bad model name fails with one line
    before any process starts, and an exported backend (ONNX) is cached once rather than by each worker.
    """
    import uvicorn

    served = served or load_served(settings)
    common = dict(host=settings.host, port=settings.port, timeout_graceful_shutdown=30,
                  access_log=settings.access_log, log_level="info")
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
