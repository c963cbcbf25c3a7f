"""Uploaded bytes to an RGB image, refusing what a client should not be able to make the server do.

Pillow does the decoding; what is checked here is the order: the declared width x height is read from the
header (``Image.open`` parses only the header) and refused above a limit *before* ``load()`` allocates the
pixels, so a small file that declares a huge image (a decompression bomb) costs nothing.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from ..data import to_rgb
from ..errors import UsageError

DEFAULT_MAX_PIXELS = 40_000_000  # 40 Mpx: above any phone photo, far below what would exhaust memory


class ImageRejected(UsageError):
    """A client's upload that cannot be classified; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``data`` as an RGB image or raise :class:`ImageRejected` with a 4xx status and one line."""
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
        if width * height > max_pixels:
            raise ImageRejected(422, f"image declares {width}x{height} = {width * height / 1e6:.0f} Mpx, "
                                     f"above the {max_pixels / 1e6:.0f} Mpx limit (refused before decoding)")
        try:
            img.load()
            return to_rgb(img)
        except Exception as exc:  # truncated or corrupt pixel data: Pillow raises many types
            raise ImageRejected(400, f"cannot decode image ({exc or type(exc).__name__})") from None
