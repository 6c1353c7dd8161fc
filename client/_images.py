"""Turning the caller's images into the JPEG the enclave receives (the paper's S1 step).

The paper (NOSSDAV '25, section on the client-to-edge link) sends the photo to the edge as
a JPEG with **4:4:4** chroma sampling: about 40 % smaller than PNG at no accuracy loss,
whereas 4:2:0 subsampling destroys the accuracy of the protected pipeline on small
images (90.22 % vs 11.5 % on CIFAR-10). :class:`JpegOptions` therefore always encodes
with ``subsampling=0`` (4:4:4); the default quality is 90, a quality at which the JPEG
stays visually lossless for the classifier while staying well under a PNG's size.

Inputs (:data:`ImageInput`):

* a path (``str`` or ``os.PathLike``) to an image file, or ``bytes`` of an image file:
  a JPEG that already suits (4:4:4 or greyscale, no larger than ``max_side``, no EXIF
  rotation) is sent **byte for byte** (no generational loss, the caller's quality is
  kept); anything else (PNG, WebP, a 4:2:0 JPEG, a large or rotated photo) is decoded
  and re-encoded;
* a Pillow image (any mode; converted to RGB or L);
* a ``numpy`` array of ``uint8``: ``H x W`` (greyscale), ``H x W x 3`` (RGB) or
  ``H x W x 4`` (RGBA; alpha dropped).

Images larger than ``max_side`` (default 512 pixels) on their longer side are scaled down
(aspect ratio kept) before encoding: the enclave crops the centre square and brings it to
its model's input size (32 x 32 for the CIFAR-10 models), so sending more pixels only
costs bandwidth. ``max_side=None`` sends the original resolution (the enclave accepts
up to 4096 pixels per side).

>>> import numpy as np
>>> prepared = prepare_image(np.zeros((32, 32, 3), dtype=np.uint8), JpegOptions())
>>> prepared.jpeg[:3] == b"\\xff\\xd8\\xff", prepared.size, prepared.reencoded
(True, (32, 32), True)
>>> prepare_image(prepared.jpeg, JpegOptions()).jpeg == prepared.jpeg   # passes through
True
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, Union

from PIL import Image, ImageOps, UnidentifiedImageError

from client._errors import InvalidImage

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["DEFAULT_JPEG_QUALITY", "ImageInput", "JpegOptions", "PreparedImage", "prepare_image"]

DEFAULT_JPEG_QUALITY = 90
DEFAULT_MAX_SIDE = 512
MAX_INPUT_BYTES = 64 * 1024 * 1024
"""Largest image file the client reads (the JPEG it sends is bounded by the protocol)."""
_EXIF_ORIENTATION = 0x0112

ImageInput: TypeAlias = Union[
    str, "os.PathLike[str]", bytes, bytearray, memoryview, Image.Image, "npt.NDArray[np.uint8]"
]
"""A path, encoded image bytes, a Pillow image, or a ``uint8`` numpy array."""


@dataclass(frozen=True)
class JpegOptions:
    """How images are encoded: JPEG ``quality`` (1..95), always 4:4:4 sampling;
    ``max_side``: downscale larger images to this many pixels on the longer side
    (``None``: never); ``passthrough``: send suitable JPEG inputs unchanged."""

    quality: int = DEFAULT_JPEG_QUALITY
    max_side: int | None = DEFAULT_MAX_SIDE
    passthrough: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.quality, bool) or not isinstance(self.quality, int):
            raise ValueError("quality is an integer")
        if not 1 <= self.quality <= 95:
            raise ValueError("quality must be in 1..95 (Pillow's useful range)")
        if self.max_side is not None and (
            isinstance(self.max_side, bool)
            or not isinstance(self.max_side, int)
            or not 16 <= self.max_side <= 4096
        ):
            raise ValueError("max_side must be None or an integer in 16..4096")


@dataclass(frozen=True)
class PreparedImage:
    """The JPEG to send: its bytes, pixel ``size`` (width, height), whether the client
    re-encoded it, and a printable ``source`` description."""

    jpeg: bytes
    size: tuple[int, int]
    reencoded: bool
    source: str


def _describe(image: object, index: int) -> str:
    if isinstance(image, str | os.PathLike):
        return os.fspath(image)
    kind = type(image).__name__
    return f"<{kind} #{index}>"


def _open(data: bytes, source: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"{source}: not a readable image ({exc})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"{source}: too many pixels ({exc})") from None
    return image


def _passes_through(image: Image.Image, data: bytes, options: JpegOptions) -> bool:
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return False
    if not (data.startswith(b"\xff\xd8\xff") and data.endswith(b"\xff\xd9")):
        return False  # the enclave refuses trailing bytes after EOI
    if options.max_side is not None and max(image.size) > options.max_side:
        return False
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        return False
    if image.mode == "L":
        return True
    from PIL import JpegImagePlugin

    return bool(JpegImagePlugin.get_sampling(image) == 0)  # 4:4:4


def _encode(image: Image.Image, options: JpegOptions) -> tuple[bytes, tuple[int, int]]:
    image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB", "L"):
        grey = image.mode in ("1", "LA", "I", "I;16", "F")
        image = image.convert("L" if grey else "RGB")
    if options.max_side is not None and max(image.size) > options.max_side:
        image = image.copy()
        image.thumbnail((options.max_side, options.max_side), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=options.quality, subsampling=0, optimize=False)
    return out.getvalue(), image.size


def _from_array(array: Any, source: str) -> Image.Image:
    import numpy as np

    if not isinstance(array, np.ndarray):
        raise InvalidImage(
            f"{source}: an image is a path, bytes, a PIL image or a numpy array, "
            f"not {type(array).__name__}"
        )
    if array.dtype != np.uint8:
        raise InvalidImage(f"{source}: a numpy image must be uint8, not {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise InvalidImage(
            f"{source}: a numpy image is H x W, H x W x 3 or H x W x 4, not {array.shape}"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidImage(f"{source}: an image has at least one pixel")
    return Image.fromarray(np.ascontiguousarray(array))


def prepare_image(image: ImageInput, options: JpegOptions, *, index: int = 0) -> PreparedImage:
    """The JPEG (4:4:4) to send for ``image`` (see the module docstring)."""
    source = _describe(image, index)
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        try:
            if path.stat().st_size > MAX_INPUT_BYTES:
                raise InvalidImage(f"{source}: larger than {MAX_INPUT_BYTES} bytes")
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidImage(f"{source}: cannot read ({exc.strerror})") from None
        image = data
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        if not data:
            raise InvalidImage(f"{source}: empty")
        if len(data) > MAX_INPUT_BYTES:
            raise InvalidImage(f"{source}: larger than {MAX_INPUT_BYTES} bytes")
        opened = _open(data, source)
        if options.passthrough and _passes_through(opened, data, options):
            return PreparedImage(data, opened.size, False, source)
        jpeg, size = _encode(opened, options)
        return PreparedImage(jpeg, size, True, source)
    pil = image if isinstance(image, Image.Image) else _from_array(image, source)
    try:
        jpeg, size = _encode(pil, options)
    except (OSError, ValueError) as exc:
        raise InvalidImage(f"{source}: cannot encode as JPEG ({exc})") from None
    return PreparedImage(jpeg, size, True, source)
