"""Images and datasets: decoding any image safely, each model's preprocessing, labelled folders with
corrupt-file detection, and the real datasets that ship with installed packages."""

from .folders import (
    HINTS_FILE, ImageSamples, check_image, dataset_hints, load_splits, scan_image_folder, split_samples,
)
from .images import eval_transform, load_image, to_rgb, torchvision_magnitude, train_transform

__all__ = [
    "HINTS_FILE", "ImageSamples", "check_image", "dataset_hints", "load_splits", "scan_image_folder",
    "split_samples", "eval_transform", "load_image", "to_rgb", "torchvision_magnitude", "train_transform",
]
