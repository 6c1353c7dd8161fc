"""Decoding the client's JPEG inside the enclave, under strict limits.

The JPEG comes out of an opened sealed request (``OpenedRequest.jpeg``); it is untrusted
input. :func:`decode_jpeg` turns it into the model's input (an RGB ``uint8`` array of
``size x size`` pixels) or raises :class:`ImageError` (answered with the sealed failure
code ``invalid-image``, never an exception to the caller).

Checklist of :func:`decode_jpeg`, in this order (every check before the work it guards):

1. Byte length within ``ImageLimits.max_bytes`` (the sealed protocol already bounds it at
   4 MiB; deployments lower it here).
2. JPEG framing: the first bytes are SOI followed by a marker (``FF D8 FF``), and the
   last two bytes are EOI (``FF D9``). Anything else (PNG, GIF, BMP, garbage, a JPEG
   with trailing bytes) is refused before Pillow sees it.
3. Pillow opens it with ``formats=["JPEG"]`` only (no other decoder is ever tried) and
   reads the header: the declared width and height must each be within
   ``max_side`` and their product within ``max_pixels``, *before* any pixel is decoded
   (the decompression-bomb guard). Pillow's own guard
   (``Image.MAX_IMAGE_PIXELS``: ``DecompressionBombWarning`` / ``DecompressionBombError``)
   stays active as a second line and is turned into the same refusal.
4. DCT-domain downscaling (``Image.draft``): libjpeg decodes at 1/2, 1/4 or 1/8 scale
   when the image is at least that much larger than the model input, so a large photo
   costs a fraction of a full decode.
5. The pixels are decoded (``load``); truncated or corrupt data raises in Pillow
   (``LOAD_TRUNCATED_IMAGES`` is never set) and is refused.
6. Colour: the image is converted to RGB (greyscale, CMYK and YCbCr JPEGs are accepted;
   an embedded ICC profile is ignored).
7. Geometry: the largest centred square is cropped (so the aspect ratio is kept), then
   resized to ``size x size`` with **bicubic** interpolation (Pillow's
   ``Resampling.BICUBIC``, which widens its support when downscaling, i.e. it
   antialiases). A ``size x size`` input (a CIFAR-10 client) is used unchanged.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageError", "ImageLimits", "decode_jpeg"]

_SOI = b"\xff\xd8\xff"
_EOI = b"\xff\xd9"


class ImageError(ValueError):
    """The JPEG was refused; ``str(error)`` is a printable-ASCII reason for the client."""


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on a client JPEG (defaults: 4 MiB, 4096 px per side, 16 megapixels)."""

    max_bytes: int = 4 * 1024 * 1024
    max_side: int = 4096
    max_pixels: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_side", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer")


DEFAULT_IMAGE_LIMITS = ImageLimits()


def decode_jpeg(
    data: bytes, size: int, limits: ImageLimits = DEFAULT_IMAGE_LIMITS
) -> npt.NDArray[np.uint8]:
    """Decode ``data`` (a JPEG) to a ``size x size x 3`` RGB array (see the checklist)."""
    if size < 1:
        raise ValueError("size must be positive")
    # 1.
    if len(data) > limits.max_bytes:
        raise ImageError(f"JPEG of {len(data)} bytes exceeds {limits.max_bytes}")
    # 2.
    if len(data) < 4 or not data.startswith(_SOI):
        raise ImageError("not a JPEG (no SOI marker)")
    if not data.endswith(_EOI):
        raise ImageError("not a complete JPEG (no EOI marker at the end)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # 3.
            image = Image.open(io.BytesIO(data), formats=["JPEG"])
            try:
                width, height = image.size
                if width < 1 or height < 1:
                    raise ImageError("JPEG with empty dimensions")
                if width > limits.max_side or height > limits.max_side:
                    raise ImageError(
                        f"JPEG of {width}x{height} pixels exceeds {limits.max_side} per side"
                    )
                if width * height > limits.max_pixels:
                    raise ImageError(
                        f"JPEG of {width}x{height} pixels exceeds {limits.max_pixels} pixels"
                    )
                # 4.
                image.draft("RGB", (size, size))
                # 5.
                image.load()
                # 6.
                rgb = image.convert("RGB")
            finally:
                image.close()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("JPEG refused by the decompression-bomb guard") from None
    except UnidentifiedImageError:
        raise ImageError("not a decodable JPEG") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError):
        raise ImageError("the JPEG could not be decoded") from None
    # 7.
    return _square_resize(rgb, size)


def _square_resize(image: Image.Image, size: int) -> npt.NDArray[np.uint8]:
    width, height = image.size
    side = min(width, height)
    if (width, height) != (side, side):
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    if array.shape != (size, size, 3):
        raise ImageError("the JPEG did not decode to an RGB image")
    return np.ascontiguousarray(array)
