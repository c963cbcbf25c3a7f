"""Uploaded bytes to an RGB image, refusing what a client should not be able to make the server do.

Pillow does the decoding; what is checked here is the order: the declared width x height and pixel mode are
read from the header (``Image.open`` parses only the header) and refused *before* ``load()`` allocates the
pixels, so a small file that declares a huge image (a decompression bomb) costs nothing. Three bounds:

- the decoded image: ``max_pixels`` 8-bit pixels' worth of memory, 16-bit and float images (which are
  rescaled through a float32 copy) proportionally fewer pixels (:data:`DECODE_BYTES_PER_PIXEL`);
- the resized image: the served model's ``refuse_size(width, height)`` names what its preprocessing would
  make of that size when it is more than the model needs (a 20000 x 4 PNG of 330 bytes would be resized to
  365000 x 73 px for a 64 px classifier);
- the upload's bytes: :class:`effnet.serve.limits.BodySizeLimit`, before any of this.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, UnidentifiedImageError

from ..data import to_rgb
from ..errors import UsageError

DEFAULT_MAX_PIXELS = 40_000_000  # 40 Mpx: above any phone photo, far below what would exhaust memory
# Peak bytes per pixel while decoding to RGB: Pillow keeps RGB as 4 bytes a pixel; a 16-bit or 32-bit
# grayscale image is its own 2-4 bytes, a float32 copy, an 8-bit one and the RGB result (effnet.data.to_rgb)
RGB_BYTES_PER_PIXEL = 4
DECODE_BYTES_PER_PIXEL = {"I;16": 11, "I;16L": 11, "I;16B": 11, "I;16N": 11, "I": 13, "F": 13}


class ImageRejected(UsageError):
    """A client's upload that cannot be classified; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def refuse_declared(width: int, height: int, mode: str, max_pixels: int) -> str | None:
    """Why an image of this declared size and mode may not be decoded, or None."""
    if width * height > max_pixels:
        return (f"image declares {width}x{height} = {width * height / 1e6:.0f} Mpx, above the "
                f"{max_pixels / 1e6:g} Mpx limit (--max-megapixels; refused before decoding)")
    per_pixel = DECODE_BYTES_PER_PIXEL.get(mode, RGB_BYTES_PER_PIXEL)
    if width * height * per_pixel > max_pixels * RGB_BYTES_PER_PIXEL:
        allowed = max_pixels * RGB_BYTES_PER_PIXEL / per_pixel
        return (f"{mode} image of {width}x{height} = {width * height / 1e6:.1f} Mpx: 16-bit and float images "
                f"cost {per_pixel} bytes a pixel to decode, so the limit is {allowed / 1e6:.1f} Mpx "
                f"(--max-megapixels; refused before decoding)")
    return None


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                  refuse_size: Callable[[int, int], str | None] | None = None) -> Image.Image:
    """Decode ``data`` as an RGB image or raise :class:`ImageRejected` with a 4xx status and one line.

    ``refuse_size(width, height)``: the served model's own bound (what its resize would cost), checked on the
    declared size before decoding."""
    if not data:
        raise ImageRejected(400, "empty upload: the file field holds no bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected(415, "not an image Pillow can read (JPEG, PNG, WebP, GIF, BMP, TIFF, ...)") from None
    except Image.DecompressionBombError as exc:  # Pillow's own, far higher, limit
        raise ImageRejected(422, f"image too large, refused before decoding: {exc}") from None
    except Exception as exc:  # a header so broken that Pillow gives up while identifying it
        raise ImageRejected(400, f"cannot read image header ({exc or type(exc).__name__})") from None
    with img:
        width, height = img.size
        reason = refuse_declared(width, height, img.mode, max_pixels) or (refuse_size and refuse_size(width, height))
        if reason:
            raise ImageRejected(422, reason)
        try:
            img.load()
            return to_rgb(img)
        except Exception as exc:  # truncated or corrupt pixel data: Pillow raises many types
            raise ImageRejected(400, f"cannot decode image ({exc or type(exc).__name__})") from None
