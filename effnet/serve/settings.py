"""The service's settings: what ``effnet serve`` flags set, passed as JSON to worker processes."""

from __future__ import annotations

import dataclasses
import json
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
    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_upload_mb: float = 20.0
    max_megapixels: float = 40.0
    workers: int = 1
    access_log: bool = True

    def __post_init__(self) -> None:
        for field, low in (("max_batch", 1), ("workers", 1), ("max_wait_ms", 0), ("max_upload_mb", 0.001),
                           ("max_megapixels", 0.001), ("port", 0)):
            if getattr(self, field) < low:
                raise UsageError(f"--{field.replace('_', '-')} must be >= {low}, got {getattr(self, field)}")

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
