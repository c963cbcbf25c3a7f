"""What every published weights row (:class:`~effnet.models.zoo.classifier_weights.PretrainedWeights` for classifiers,
:class:`~effnet.models.zoo.detector_weights.DetectorWeights` for detectors) derives the same way from its fields."""

from __future__ import annotations

# the weight tables' shorthand: evaluation resize filter, and mean/std -- ImageNet's, or 0.5 (inputs in [-1, 1])
BIC, BIL = "bicubic", "bilinear"
IN, TF = "imagenet", "tf"


def hash_prefix(file_name: str) -> str:
    """The start of a published file's sha256 that its name carries (``efficientnet_b0_ra-3dd342df.pth``:
    ``3dd342df``), torch.hub's and timm's convention."""
    return file_name.rsplit("-", 1)[-1].split(".")[0]


class PublishedFile:
    """A mixin for frozen dataclasses with ``model``, ``tag``, ``url``, ``file`` and ``params_m`` fields."""

    model: str
    tag: str
    url: str
    file: str
    params_m: float

    @property
    def name(self) -> str:
        """``model.tag``, as timm and ``effnet weights`` write it."""
        return f"{self.model}.{self.tag}"

    @property
    def file_name(self) -> str:
        """The file's name (inside its package, or the last part of the URL)."""
        return self.file or self.url.rsplit("/", 1)[-1]

    @property
    def size_mb(self) -> float:
        """Size of the converted float32 file in MB (4 bytes a parameter)."""
        return self.params_m * 4
