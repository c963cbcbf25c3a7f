"""Classifying image files with a model and its own preprocessing."""

from .classify import Prediction, predict_files

__all__ = ["Prediction", "predict_files"]
