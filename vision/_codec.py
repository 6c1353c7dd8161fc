"""Neural codec: CompressAI ``FactorizedPrior`` and its two bit-string forms.

The latents ``y = g_a(x)`` of a ``FactorizedPrior`` are quantised against the entropy
bottleneck's medians (``symbol = round(y - median)``, exactly as
``EntropyBottleneck.compress`` does) and entropy-coded with CompressAI's own rANS coder
(``compressai.ans.RansEncoder`` / ``RansDecoder``) using the bottleneck's quantised CDF
tables, CDF lengths and offsets, which ``codec.update()`` builds. Coding without those
tables is refused (:class:`CodecError`).

Two forms, both self-describing:

* **single** (:func:`encode_single` / :func:`decode_single`): one string per image. Its
  rANS payload is byte-for-byte ``EntropyBottleneck.compress``'s string for that image
  with trailing zero bytes removed.
* **batch** (:func:`encode_batch` / :func:`decode_batch`): one rANS stream over the
  concatenated symbols of all images (image-major, then channel, row, column), so the
  8-byte final flush of the rANS state is paid once per batch instead of once per image.

Layout (format version 2)::

    byte 0      bits 7..5  format version (2)
                bit  4     form: 0 = single image, 1 = batch
                bits 3..0  shape: s in 1..15 is the square latent grid s x s (images up
                           to 240 x 240 pixels) and nothing more follows for the shape;
                           0 means two varints h, w follow
    shape       only when the nibble is 0: h, w (unsigned LEB128, minimal)
    count       batch form only: varint, the number of images (>= 1)
    payload     the rANS stream: little-endian 32-bit words as CompressAI writes them,
                trailing zero bytes removed (the decoder reads zeros past the end)

The encoding is canonical: the nibble is used whenever ``h == w <= 15``, the varints
only otherwise (a square grid that fits the nibble written as varints is refused).
``h x w`` is the latent grid; the decoded image is ``16h x 16w`` pixels and carries
``M`` (the codec's latent channels) x ``h`` x ``w`` symbols per image. A CIFAR-10 image
(32 x 32, latent 2 x 2) costs a 1-byte header as a single string, and a batch stream
2 bytes for up to 127 images or 3 bytes for up to 16383. Trailing-zero removal makes a
short stream cost about ``(31 + information bits) / 8`` bytes instead of a whole number
of 4-byte words. Version 1 (a flags byte with a separate shape byte) is not read.

Decoding validates, in this order, before anything is allocated in proportion to the
claimed size or handed to native code:

1. the header parses, the version is known, the form is the one asked for, the encoding
   is canonical (re-serialising it gives the same bytes);
2. count, latent sides and total symbols are within :class:`CodecLimits`;
3. the payload is non-empty, within the byte limit, has no trailing zero byte, and its
   initial rANS state (first 8 bytes, little-endian) is at least ``2**31``, the rANS
   lower bound every encoder flush satisfies;
4. the rANS decoder runs on a copy of the payload followed by enough zero padding that
   no read can leave the buffer (CompressAI's native decoder does not check bounds;
   see :func:`_padding_words` for the bound);
5. every decoded symbol is within ``±2**16`` (the encoder refuses anything larger);
6. **integrity**: the decoded symbols are re-encoded and the result must equal the
   payload byte for byte. rANS decoding of arbitrary bytes yields *some* symbols; only
   the encoder's own output survives this check, so garbage, truncation and extension
   are rejected instead of turning into a silently wrong image. It costs no bytes.
"""

from __future__ import annotations

import functools
import threading
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vision._errors import CodecError

if TYPE_CHECKING:
    import torch
    from compressai.models import FactorizedPrior

__all__ = [
    "FORMAT_VERSION",
    "CodecLimits",
    "StreamHeader",
    "decode_batch",
    "decode_batch_latents",
    "decode_single",
    "decode_single_latents",
    "encode_batch",
    "encode_single",
    "make_codec",
    "quantized_latents",
]

FORMAT_VERSION = 2
"""The bit-string format version this module writes and reads."""

_FORM_SINGLE = 0
_FORM_BATCH = 1
_MAX_NIBBLE_SIDE = 15
_VARINT_SHAPE = 0
_DOWNSAMPLING = 16
_MAX_ABS_SYMBOL = 1 << 16
_RANS_L = 1 << 31
_MAX_VARINT_BYTES = 5


def _import_compressai() -> None:
    """Import CompressAI, silencing the FutureWarning an optional dependency emits."""
    with warnings.catch_warnings():
        # compressai imports torch_geometric, which calls the deprecated torch.jit.script.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
        import compressai.ans
        import compressai.models  # noqa: F401


def make_codec(N: int = 128, M: int = 192) -> FactorizedPrior:
    """Build an (untrained) ``FactorizedPrior`` with ``N`` hidden and ``M`` latent channels.

    The paper's codec is ``N=128, M=192`` (about 12 MB of float32 weights). Call
    ``codec.update()`` after training or loading, before producing bit-strings.
    """
    if N <= 0 or M <= 0:
        raise ValueError(f"channel counts must be positive, got N={N}, M={M}")
    _import_compressai()
    from compressai.models import FactorizedPrior

    return FactorizedPrior(N=N, M=M)


@dataclass(frozen=True)
class CodecLimits:
    """Upper bounds enforced on decode before any size-dependent allocation."""

    max_count: int = 4096
    """Images in one batch stream."""
    max_latent_side: int = 256
    """Latent rows or columns (the image side is 16 times this)."""
    max_symbols: int = 1 << 20
    """Symbols in one stream (count x channels x rows x columns)."""
    max_payload_bytes: int = 1 << 22
    """Bytes of rANS payload in one stream."""

    def __post_init__(self) -> None:
        for name in ("max_count", "max_latent_side", "max_symbols", "max_payload_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")


DEFAULT_LIMITS = CodecLimits()


# --- header -------------------------------------------------------------------------


def _put_varint(value: int, out: bytearray) -> None:
    if value < 0:
        raise ValueError("varints are unsigned")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _get_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise CodecError(f"bit-string truncated inside the {what}")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise CodecError(f"non-minimal varint for the {what}")
            return value, pos + i + 1
    raise CodecError(f"varint for the {what} is too long")


@dataclass(frozen=True)
class StreamHeader:
    """The self-describing header of a bit-string (see the module docstring)."""

    batch: bool
    """True for the batch form (one stream for ``count`` images)."""
    height: int
    """Latent rows (image rows / 16)."""
    width: int
    """Latent columns (image columns / 16)."""
    count: int = 1
    """Images in the stream; always 1 for the single form."""
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.version != FORMAT_VERSION:
            raise CodecError(f"unsupported bit-string format version {self.version}")
        if self.height < 1 or self.width < 1:
            raise CodecError(f"latent shape must be positive, got {self.height}x{self.width}")
        if self.count < 1:
            raise CodecError("a stream holds at least one image")
        if not self.batch and self.count != 1:
            raise CodecError("the single form holds exactly one image")

    @property
    def square_nibble(self) -> int:
        """The shape nibble of byte 0: the side of a square grid up to 15, else 0 (varints)."""
        if self.height == self.width <= _MAX_NIBBLE_SIDE:
            return self.height
        return _VARINT_SHAPE

    def to_bytes(self) -> bytes:
        """Serialise canonically (the shape nibble whenever the grid is square, side <= 15)."""
        nibble = self.square_nibble
        form = _FORM_BATCH if self.batch else _FORM_SINGLE
        out = bytearray([(self.version << 5) | (form << 4) | nibble])
        if nibble == _VARINT_SHAPE:
            _put_varint(self.height, out)
            _put_varint(self.width, out)
        if self.batch:
            _put_varint(self.count, out)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> StreamHeader:
        """The header of the bit-string ``data`` (its payload is not examined)."""
        return cls.parse(data, limits)[0]

    @classmethod
    def parse(cls, data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> tuple[StreamHeader, int]:
        """Parse the header at the start of ``data``; returns it and the payload offset.

        Checks: known version, canonical encoding (the shape nibble for a square grid of
        side up to 15, minimal varints), and the count and shape within ``limits``.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CodecError(f"a bit-string must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise CodecError("empty bit-string")
        first = data[0]
        version = first >> 5
        if version != FORMAT_VERSION:
            raise CodecError(f"unsupported bit-string format version {version}")
        batch = bool(first & 0x10)
        nibble = first & 0x0F
        pos = 1
        if nibble == _VARINT_SHAPE:
            height, pos = _get_varint(data, pos, "latent height")
            width, pos = _get_varint(data, pos, "latent width")
        else:
            height = width = nibble
        count = 1
        if batch:
            count, pos = _get_varint(data, pos, "image count")
        if height > limits.max_latent_side or width > limits.max_latent_side:
            raise CodecError(
                f"latent shape {height}x{width} exceeds the limit {limits.max_latent_side}"
            )
        if count > limits.max_count:
            raise CodecError(f"image count {count} exceeds the limit {limits.max_count}")
        header = cls(batch=batch, height=height, width=width, count=count)
        if header.to_bytes() != data[:pos]:
            raise CodecError("non-canonical bit-string header")
        return header, pos


# --- entropy coding -----------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    cdfs: list[list[int]]
    cdf_sizes: list[int]
    offsets: list[int]
    medians: torch.Tensor
    """Shape (M,), float, on the codec's device."""

    @property
    def channels(self) -> int:
        return len(self.cdf_sizes)


_TABLE_CACHE: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], _Tables]] = (
    weakref.WeakKeyDictionary()
)
_TABLE_LOCK = threading.Lock()


def _tables(codec: FactorizedPrior) -> _Tables:
    """The coding tables of ``codec``'s entropy bottleneck, as the native coder takes them.

    Rows are cut to their CDF length (the coder reads no further). Cached per bottleneck;
    the cache entry holds the table tensors themselves and their version counters, so a
    later ``update()`` (new tensors) or in-place change (new version) rebuilds it.
    """
    eb: Any = getattr(codec, "entropy_bottleneck", None)
    if eb is None:
        raise CodecError("not a FactorizedPrior: no entropy_bottleneck")
    cdf, sizes, offsets, quantiles = eb._quantized_cdf, eb._cdf_length, eb._offset, eb.quantiles
    key = tuple((t, t._version) for t in (cdf, sizes, offsets, quantiles))
    with _TABLE_LOCK:
        cached = _TABLE_CACHE.get(eb)
    if cached is not None and all(
        a is b and va == vb for (a, va), (b, vb) in zip(cached[0], key, strict=True)
    ):
        return cached[1]
    if cdf.numel() == 0 or sizes.numel() == 0 or offsets.numel() == 0:
        raise CodecError("the codec's entropy tables are not built: call codec.update() first")
    channels = int(eb.channels)
    if cdf.dim() != 2 or cdf.size(0) != channels or sizes.numel() != channels:
        raise CodecError("the codec's entropy tables do not match its channel count")
    if offsets.numel() != channels:
        raise CodecError("the codec's entropy offsets do not match its channel count")
    size_list = [int(v) for v in sizes.reshape(-1).tolist()]
    if min(size_list) < 3 or max(size_list) > cdf.size(1):
        raise CodecError("the codec's CDF lengths are inconsistent with its tables")
    rows = cdf.tolist()
    tables = _Tables(
        cdfs=[row[:n] for row, n in zip(rows, size_list, strict=True)],
        cdf_sizes=size_list,
        offsets=[int(v) for v in offsets.reshape(-1).tolist()],
        medians=quantiles[:, 0, 1].detach().clone(),
    )
    with _TABLE_LOCK:
        _TABLE_CACHE[eb] = (key, tables)
    return tables


def _padding_words(symbols: int, words: int) -> int:
    """Zero words to append so CompressAI's unchecked rANS decoder stays in the buffer.

    Bound on the 32-bit words ``RansDecoder.decode_with_indexes`` reads from a stream of
    ``words`` words for ``symbols`` symbols, whatever the bytes (given an initial state
    ``x >= L = 2**31``, checked before calling it, which keeps ``x >= L`` throughout):

    * 2 words for the initial state, and at most 1 per symbol in ``Rans64DecAdvance``;
    * a symbol that decodes to the escape value reads 4-bit chunks (``GetBits``), each
      reading at most one word, and at most one every 7 chunks after the first, since a
      refill leaves ``x >= 2**59``;
    * its length prefix continues while chunks equal 15; a 64-bit state yields at most
      9 chunks before a refill and then, in the zero padding, a 0 chunk, so the prefix
      has at most ``10 + 9 r`` chunks, with ``r`` real words consumed meanwhile (summing
      to at most ``words``); the escaped value then has at most 15 chunks per prefix
      chunk. Hence at most ``16 (10 + 9 r)`` chunks, ``24 + 21 r`` words for them and,
      with the advance, ``25 + 21 r`` words per symbol.

    Total: at most ``2 + 25 * symbols + 21 * words``; the padding adds a margin. The
    tests check the bound against a transcription of the native decoder on garbage.
    """
    return 27 * symbols + 24 * words + 16


def _strip(payload: bytes) -> bytes:
    return payload.rstrip(b"\x00")


def _rans_encode(tables: _Tables, symbols: list[int], indexes: Sequence[int]) -> bytes:
    from compressai import ans

    encoder = ans.RansEncoder()
    raw: bytes = encoder.encode_with_indexes(
        symbols, indexes, tables.cdfs, tables.cdf_sizes, tables.offsets
    )
    return _strip(raw)


def _rans_decode(tables: _Tables, payload: bytes, indexes: Sequence[int]) -> list[int]:
    """Decode ``len(indexes)`` symbols from ``payload`` and verify them by re-encoding."""
    from compressai import ans

    if not payload:
        raise CodecError("empty rANS payload")
    if payload[-1] == 0:
        raise CodecError("non-canonical rANS payload (trailing zero byte)")
    words = -(-len(payload) // 4)
    buffer = payload + bytes(4 * words - len(payload) + 4 * _padding_words(len(indexes), words))
    if int.from_bytes(buffer[:8], "little") < _RANS_L:
        raise CodecError("invalid rANS payload (initial state below the rANS bound)")
    decoder = ans.RansDecoder()
    symbols: list[int] = decoder.decode_with_indexes(
        buffer, indexes, tables.cdfs, tables.cdf_sizes, tables.offsets
    )
    if len(symbols) != len(indexes):
        raise CodecError("rANS decoder returned the wrong number of symbols")
    if symbols and (max(symbols) > _MAX_ABS_SYMBOL or min(symbols) < -_MAX_ABS_SYMBOL):
        raise CodecError("corrupt bit-string (decoded symbol out of range)")
    if _rans_encode(tables, symbols, indexes) != payload:
        raise CodecError("corrupt bit-string (integrity check failed: re-encoding differs)")
    return symbols


@functools.lru_cache(maxsize=32)
def _channel_indexes(channels: int, height: int, width: int, count: int) -> tuple[int, ...]:
    """The CDF index (channel) of every symbol: image, then channel, row, column."""
    per_image = tuple(c for c in range(channels) for _ in range(height * width))
    return per_image * count


# --- quantisation -------------------------------------------------------------------


def _check_images(x: torch.Tensor) -> None:
    import torch

    if not isinstance(x, torch.Tensor):
        raise CodecError(f"images must be a tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.size(1) != 3:
        raise CodecError(f"images must be N x 3 x H x W, got {tuple(x.shape)}")
    if x.size(0) < 1:
        raise CodecError("no images to encode")
    if x.size(2) % _DOWNSAMPLING or x.size(3) % _DOWNSAMPLING or x.size(2) < 1:
        raise CodecError(f"image sides must be multiples of {_DOWNSAMPLING}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise CodecError("images must be floating point in [0, 1]")


def quantized_latents(codec: FactorizedPrior, x: torch.Tensor) -> torch.Tensor:
    """The integer symbols ``round(g_a(x) - median)`` (N x M x h x w, int32, on CPU).

    These are exactly the symbols ``EntropyBottleneck.compress`` codes; the dequantised
    latents are ``symbols + median``.
    """
    import torch

    _check_images(x)
    tables = _tables(codec)
    param = next(codec.parameters())
    with torch.inference_mode():
        y = codec.g_a(x.to(device=param.device, dtype=param.dtype))
        if not bool(torch.isfinite(y).all()):
            raise CodecError("the encoder produced non-finite latents")
        if y.size(1) != tables.channels:
            raise CodecError("latent channels do not match the entropy tables")
        shifted = y - tables.medians.to(y.dtype).reshape(1, -1, 1, 1)
        if float(shifted.abs().max()) > _MAX_ABS_SYMBOL:
            raise CodecError("latent value out of the codable range")
        return torch.round(shifted).to(torch.int32).cpu()


def _dequantize(
    tables: _Tables, symbols: list[int], shape: tuple[int, int, int, int]
) -> torch.Tensor:
    import torch

    q = torch.tensor(symbols, dtype=torch.int32).reshape(shape)
    medians = tables.medians
    return q.to(device=medians.device, dtype=medians.dtype) + medians.reshape(1, -1, 1, 1)


def _synthesise(codec: FactorizedPrior, y_hat: torch.Tensor) -> torch.Tensor:
    import torch

    with torch.inference_mode():
        param = next(codec.parameters())
        out: torch.Tensor = codec.g_s(y_hat.to(device=param.device, dtype=param.dtype))
        return out.clamp_(0.0, 1.0)


# --- public coding API --------------------------------------------------------------


def encode_single(codec: FactorizedPrior, x: torch.Tensor) -> list[bytes]:
    """Encode each image of ``x`` (N x 3 x H x W in [0, 1]) to its own bit-string."""
    symbols = quantized_latents(codec, x)
    tables = _tables(codec)
    n, channels, height, width = symbols.shape
    header = StreamHeader(batch=False, height=height, width=width).to_bytes()
    indexes = _channel_indexes(channels, height, width, 1)
    flat = symbols.reshape(n, -1).tolist()
    return [header + _rans_encode(tables, row, indexes) for row in flat]


def encode_batch(codec: FactorizedPrior, x: torch.Tensor) -> bytes:
    """Encode all images of ``x`` into one bit-string (one rANS stream)."""
    symbols = quantized_latents(codec, x)
    tables = _tables(codec)
    n, channels, height, width = symbols.shape
    header = StreamHeader(batch=True, height=height, width=width, count=n).to_bytes()
    indexes = _channel_indexes(channels, height, width, n)
    return header + _rans_encode(tables, symbols.reshape(-1).tolist(), indexes)


def _decode_stream(
    codec: FactorizedPrior, data: bytes, *, batch: bool, limits: CodecLimits
) -> torch.Tensor:
    header, pos = StreamHeader.parse(data, limits)
    if header.batch != batch:
        wanted, got = ("batch", "single-image") if batch else ("single-image", "batch")
        raise CodecError(f"expected a {wanted} bit-string, got the {got} form")
    tables = _tables(codec)
    per_image = tables.channels * header.height * header.width
    if header.count * per_image > limits.max_symbols:
        raise CodecError(
            f"stream of {header.count * per_image} symbols exceeds the limit {limits.max_symbols}"
        )
    payload = bytes(data[pos:])
    if len(payload) > limits.max_payload_bytes:
        raise CodecError(f"payload of {len(payload)} bytes exceeds the limit")
    indexes = _channel_indexes(tables.channels, header.height, header.width, header.count)
    symbols = _rans_decode(tables, payload, indexes)
    shape = (header.count, tables.channels, header.height, header.width)
    return _dequantize(tables, symbols, shape)


def decode_single_latents(
    codec: FactorizedPrior, strings: Sequence[bytes], *, limits: CodecLimits = DEFAULT_LIMITS
) -> torch.Tensor:
    """Decode single-image strings to dequantised latents ``y_hat`` (N x M x h x w).

    All strings must share one latent shape.
    """
    import torch

    items: object = strings
    if isinstance(items, bytes | bytearray) or not isinstance(items, Sequence):
        raise CodecError("expected a sequence of single-image bit-strings")
    if not strings:
        raise CodecError("no bit-strings to decode")
    if len(strings) > limits.max_count:
        raise CodecError(f"{len(strings)} strings exceed the limit {limits.max_count}")
    latents = [_decode_stream(codec, s, batch=False, limits=limits) for s in strings]
    shapes = {tuple(t.shape) for t in latents}
    if len(shapes) != 1:
        raise CodecError("single-image strings of different shapes in one call")
    return torch.cat(latents)


def decode_batch_latents(
    codec: FactorizedPrior, data: bytes, *, limits: CodecLimits = DEFAULT_LIMITS
) -> torch.Tensor:
    """Decode a batch bit-string to dequantised latents ``y_hat`` (N x M x h x w)."""
    return _decode_stream(codec, data, batch=True, limits=limits)


def decode_single(
    codec: FactorizedPrior, strings: Sequence[bytes], *, limits: CodecLimits = DEFAULT_LIMITS
) -> torch.Tensor:
    """Decode single-image strings to images (N x 3 x 16h x 16w in [0, 1])."""
    return _synthesise(codec, decode_single_latents(codec, strings, limits=limits))


def decode_batch(
    codec: FactorizedPrior, data: bytes, *, limits: CodecLimits = DEFAULT_LIMITS
) -> torch.Tensor:
    """Decode a batch bit-string to images (N x 3 x 16h x 16w in [0, 1])."""
    return _synthesise(codec, decode_batch_latents(codec, data, limits=limits))
