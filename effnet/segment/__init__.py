"""Semantic segmentation, the third task: U-Net and FPN segmenters on the EfficientNet encoders
(``effnet.models.nets.segmenter``), training (``task``: :class:`SegmentationTask` for the shared loop; ``loss``:
cross-entropy + Dice), scores (``metrics``: mean IoU, per-class IoU, pixel accuracy from one confusion matrix;
``evaluate``), images in and masks out (``predictor``: :class:`Predictor`), mask files and overlays (``predict``),
verified exports (``export``) and serving (``served``: ``POST /segment``); ``commands``: ``effnet segment
train|eval|predict|export``."""

from .predictor import Predictor
from .task import SegmentationTask

__all__ = ["Predictor", "SegmentationTask"]
