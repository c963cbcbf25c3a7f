"""The classifier's answer as the service documents it (pydantic, which comes with the ``serve`` extra):
effnet.results' classification schema, one per uploaded image."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    label: str = Field(description="class name")
    index: int = Field(description="the model's output index")
    score: float


class Classification(BaseModel):
    path: str | None = Field(None, description="the uploaded file's name, when it has one")
    predictions: list[Prediction]
