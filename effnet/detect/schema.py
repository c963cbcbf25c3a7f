"""The detector's answer as the service documents it (pydantic, which comes with the ``serve`` extra):
effnet.results' detection schema, one per uploaded image."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
