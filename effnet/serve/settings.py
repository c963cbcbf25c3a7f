"""The service's settings: what ``effnet serve`` flags set, passed as JSON to worker processes."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class ServeSettings:
    model: str
    pretrained: bool = False
    backend: str = "auto"
    calibration: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 4  # measured: 1-thread engines peak at batch 2-4 here, larger batches spill the caches
    max_wait_ms: float = 5.0
    max_upload_mb: float = 20.0
    max_megapixels: float = 40.0
    workers: int = 1
    access_log: bool = True
    infer_threads: int | None = None  # inference threads (batches side by side), each with its own engine
    threads: int | None = None  # intra-op threads per inference thread
    name: str | None = None  # the model's name in the Open Inference Protocol routes (default: its own name)
    max_queue: int | None = None  # images waiting for inference beyond which requests get 503
    max_concurrency: int | None = None  # inference requests in the server at once (reading, decoding, waiting)
    body_timeout: float = 30.0  # seconds for a request's whole body to arrive (else 408)
    idle_timeout: float = 5.0  # seconds a connection may sit without a complete request head (else closed)
    shutdown_timeout: float = 5.0  # seconds SIGTERM waits for accepted requests to be answered

    def __post_init__(self) -> None:
        for field, low in (("max_batch", 1), ("workers", 1), ("max_wait_ms", 0), ("max_upload_mb", 0.001),
                           ("max_megapixels", 0.001), ("port", 0), ("body_timeout", 0.01),
                           ("idle_timeout", 0.01), ("shutdown_timeout", 0)):
            if getattr(self, field) < low:
                raise UsageError(f"--{field.replace('_', '-')} must be >= {low}, got {getattr(self, field)}")
        for field in ("infer_threads", "threads", "max_queue", "max_concurrency"):
            if getattr(self, field) is not None and getattr(self, field) < 1:
                raise UsageError(f"--{field.replace('_', '-')} must be >= 1, got {getattr(self, field)}")

    @property
    def inference_threads(self) -> int:
        """Default: one inference thread per core of this process, each engine single-threaded. Measured on
        2 shared cores (benchmarks/bench_serve.py): 2 x 1 thread served 1.4x the requests of 1 x 2 threads, and
        a 1-thread engine is never slowed by a lost core the way a 2-thread one is (its threads wait for each
        other at every layer)."""
        return self.infer_threads or max(1, (os.cpu_count() or 1) // self.workers)

    @property
    def engine_threads(self) -> int:
        """Intra-op threads of each inference thread's engine: the cores are split, never oversubscribed."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers // self.inference_threads)

    @property
    def queue_limit(self) -> int:
        """Default: four full batches (of at least 4 images, so that an unbatched server still takes a burst)
        per inference thread: a few batch times of queueing at most; beyond, a client is better told to come
        back (503, Retry-After) than kept waiting."""
        return self.max_queue or 4 * max(self.max_batch, 4) * self.inference_threads

    @property
    def concurrency_limit(self) -> int:
        """Default: twice the queue, so requests being read and decoded can refill it; each holds its upload
        (at most --max-upload-mb), so this also bounds the memory uploads can take."""
        return self.max_concurrency or 2 * self.queue_limit

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeSettings":
        return cls(**json.loads(text))
