"""The segmenter's answer as the service documents it (pydantic, which comes with the ``serve`` extra): one per
uploaded image, its size, the classes present with their pixel counts, and the mask in the image's own pixels --
each class's pixels run-length encoded as COCO does (the default), or the whole mask as one PNG (``png=1``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RLE(BaseModel):
    """COCO's uncompressed run-length encoding of one class's pixels: ``counts`` alternate runs of pixels outside
    and inside the class, starting outside (a leading 0 when the first pixel is inside), in column-major order
    (down the first column, then the next). ``pycocotools.mask.decode(pycocotools.mask.frPyObjects(rle, h, w))``
    gives the (h, w) 0/1 array back."""

    size: list[int] = Field(description="[height, width] of the image", min_length=2, max_length=2)
    counts: list[int] = Field(description="run lengths, column-major, starting with a run outside the class")


class SegmentClass(BaseModel):
    label: str = Field(description="class name")
    index: int = Field(description="the model's class index (the mask's pixel value)")
    pixels: int = Field(description="how many of the image's pixels are of this class")
    rle: RLE | None = Field(None, description="where they are (absent with png=1)")


class SegmentationResult(BaseModel):
    path: str | None = Field(None, description="the uploaded file's name, when it has one")
    width: int
    height: int
    classes: list[SegmentClass] = Field(description="the classes present, by index")
    png: str | None = Field(None, description="with png=1: the mask as a base64 palette PNG of the image's size, "
                                              "pixel value = class index (VOC's colours)")
