"""Object detection: EfficientDet on the effnet backbone (issue 10, in progress)."""
