"""The ``/v1/classify`` wire format: a compact binary batch of bit-strings, JSON answers.

Specification: docs/cloud_api.md, sections 3 (request body) and 4 (response). This module
has no torch or starlette dependency, so the enclave app can build requests and parse
answers with it.

Request body (``Content-Type: application/vnd.pmc2.bitstrings``), all integers unsigned
big-endian::

    offset  size  field
    0       4     magic "PMCB"
    4       1     version 0x01
    5       1     form: 0x00 single (one string per image), 0x01 batch-stream (one stream)
    6       1     top_k, 1 .. 100
    7       1     codec_len, 1 .. 72
    8       L     codec id, ASCII (e.g. "pmc2-fp-128-192/v2")
    8+L     2     count N, 1 .. 65535 (images)
    single form:  N x 2-byte lengths (each >= 1), then the N strings back to back
    batch form:   4-byte stream length (>= 1), then the stream (which holds N images)
    the body ends exactly there (no trailing bytes)
"""

from __future__ import annotations

import enum
import itertools
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CODEC_ID",
    "MAGIC",
    "MAX_CODEC_ID_BYTES",
    "MAX_TOP_K",
    "MEDIA_TYPE",
    "PPM",
    "VERSION",
    "ClassifyRequest",
    "ClassifyResponse",
    "Form",
    "ImageResult",
    "ScoredLabel",
    "WireError",
]

MAGIC = b"PMCB"
VERSION = 1
MEDIA_TYPE = "application/vnd.pmc2.bitstrings"
MAX_TOP_K = 100
MAX_CODEC_ID_BYTES = 72
MAX_COUNT = 0xFFFF
PPM = 1_000_000
MAX_LABEL = 0xFFFF

CODEC_ID = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}/v[1-9][0-9]{0,5}")
"""Codec identifiers, the grammar of the egress policy's ``codec`` (``name/vN``)."""

_FIXED = struct.Struct(">4sBBBB")  # magic version form top_k codec_len
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_LABEL_NAME = re.compile(r"[\x20-\x7e]{1,64}")
_TIMING_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_MAX_RESPONSE_JSON = 16 * 1024 * 1024


class WireError(ValueError):
    """A request body or response document that does not follow the wire format."""


class Form(enum.IntEnum):
    """How the bit-strings of a request are framed."""

    SINGLE = 0
    """One self-contained bit-string per image (``vision.encode_single``)."""
    BATCH = 1
    """One stream for all images (``vision.encode_batch``)."""

    @property
    def label(self) -> str:
        return "single" if self is Form.SINGLE else "batch-stream"


@dataclass(frozen=True)
class ClassifyRequest:
    """A parsed ``/v1/classify`` body.

    ``strings`` holds ``count`` strings for :attr:`Form.SINGLE` and exactly one stream
    for :attr:`Form.BATCH` (whose own header must claim ``count`` images; the server
    checks that before decoding).
    """

    codec: str
    form: Form
    count: int
    strings: tuple[bytes, ...]
    top_k: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.codec, str) or not CODEC_ID.fullmatch(self.codec):
            raise WireError("codec id must match name/vN (lowercase, at most 72 bytes)")
        if not isinstance(self.form, Form):
            raise WireError("form must be a Form")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise WireError("top_k must be an integer")
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise WireError(f"top_k must be 1..{MAX_TOP_K}")
        if isinstance(self.count, bool) or not isinstance(self.count, int):
            raise WireError("count must be an integer")
        if not 1 <= self.count <= MAX_COUNT:
            raise WireError(f"count must be 1..{MAX_COUNT}")
        strings = tuple(self.strings)
        if not all(isinstance(s, bytes) and s for s in strings):
            raise WireError("bit-strings must be non-empty bytes")
        if self.form is Form.SINGLE:
            if len(strings) != self.count:
                raise WireError("the single form carries exactly count strings")
            if any(len(s) > 0xFFFF for s in strings):
                raise WireError("a single-form string is at most 65535 bytes")
        else:
            if len(strings) != 1:
                raise WireError("the batch form carries exactly one stream")
            if len(strings[0]) > 0xFFFFFFFF:
                raise WireError("a stream is at most 2**32 - 1 bytes")
        object.__setattr__(self, "strings", strings)

    @classmethod
    def single(cls, codec: str, strings: Sequence[bytes], *, top_k: int = 1) -> ClassifyRequest:
        """A request carrying one string per image."""
        return cls(codec, Form.SINGLE, len(strings), tuple(strings), top_k)

    @classmethod
    def batch(cls, codec: str, stream: bytes, count: int, *, top_k: int = 1) -> ClassifyRequest:
        """A request carrying one batch stream of ``count`` images."""
        return cls(codec, Form.BATCH, count, (stream,), top_k)

    @property
    def payload_bytes(self) -> int:
        """Bytes of bit-strings carried (without framing)."""
        return sum(len(s) for s in self.strings)

    def to_bytes(self) -> bytes:
        """The wire form (docs/cloud_api.md 3)."""
        codec = self.codec.encode("ascii")
        out = bytearray(_FIXED.pack(MAGIC, VERSION, int(self.form), self.top_k, len(codec)))
        out += codec
        out += _U16.pack(self.count)
        if self.form is Form.SINGLE:
            for s in self.strings:
                out += _U16.pack(len(s))
            for s in self.strings:
                out += s
        else:
            out += _U32.pack(len(self.strings[0]))
            out += self.strings[0]
        return bytes(out)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        max_count: int = MAX_COUNT,
        max_string_bytes: int = 0xFFFF,
        max_stream_bytes: int = 0xFFFFFFFF,
    ) -> ClassifyRequest:
        """Parse a request body strictly.

        Checklist (docs/cloud_api.md 3.2), in order, every length checked against the
        remaining bytes before it is used: 1. at least 8 bytes, magic ``PMCB``;
        2. version 1; 3. form 0 or 1; 4. top_k 1..100; 5. codec_len 1..72, the codec id
        present, ASCII, matching ``name/vN``; 6. count present, 1..``max_count``;
        7. single form: ``count`` lengths present, each 1..``max_string_bytes``, their
        strings present; batch form: stream length present, 1..``max_stream_bytes``,
        the stream present; 8. no trailing bytes.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise WireError("a request body is bytes")
        data = bytes(data)
        if len(data) < _FIXED.size:
            raise WireError("truncated request (fixed header)")
        magic, version, form_byte, top_k, codec_len = _FIXED.unpack_from(data)
        if magic != MAGIC:
            raise WireError("not a PMC2 bit-string batch (bad magic)")
        if version != VERSION:
            raise WireError(f"unsupported request version {version}")
        try:
            form = Form(form_byte)
        except ValueError:
            raise WireError(f"unknown form 0x{form_byte:02x}") from None
        if not 1 <= top_k <= MAX_TOP_K:
            raise WireError(f"top_k {top_k} outside 1..{MAX_TOP_K}")
        if not 1 <= codec_len <= MAX_CODEC_ID_BYTES:
            raise WireError(f"codec id length {codec_len} outside 1..{MAX_CODEC_ID_BYTES}")
        pos = _FIXED.size
        if len(data) < pos + codec_len + 2:
            raise WireError("truncated request (codec id or count)")
        raw_codec = data[pos : pos + codec_len]
        pos += codec_len
        try:
            codec = raw_codec.decode("ascii")
        except UnicodeDecodeError:
            raise WireError("codec id is not ASCII") from None
        if not CODEC_ID.fullmatch(codec):
            raise WireError("codec id does not match name/vN")
        (count,) = _U16.unpack_from(data, pos)
        pos += 2
        if not 1 <= count <= max_count:
            raise WireError(f"count {count} outside 1..{max_count}")
        strings: list[bytes] = []
        if form is Form.SINGLE:
            if len(data) < pos + 2 * count:
                raise WireError("truncated request (string lengths)")
            lengths = [_U16.unpack_from(data, pos + 2 * i)[0] for i in range(count)]
            pos += 2 * count
            for index, length in enumerate(lengths):
                if not 1 <= length <= max_string_bytes:
                    raise WireError(
                        f"string {index}: length {length} outside 1..{max_string_bytes}"
                    )
            if len(data) - pos < sum(lengths):
                raise WireError("truncated request (strings)")
            for length in lengths:
                strings.append(data[pos : pos + length])
                pos += length
        else:
            if len(data) < pos + 4:
                raise WireError("truncated request (stream length)")
            (length,) = _U32.unpack_from(data, pos)
            pos += 4
            if not 1 <= length <= max_stream_bytes:
                raise WireError(f"stream length {length} outside 1..{max_stream_bytes}")
            if len(data) - pos < length:
                raise WireError("truncated request (stream)")
            strings.append(data[pos : pos + length])
            pos += length
        if pos != len(data):
            raise WireError("trailing bytes after the request")
        return cls(codec, form, count, tuple(strings), top_k)


# --- response -----------------------------------------------------------------------


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise WireError(f"{where} must be an integer in {low}..{high}")
    return value


def _obj(value: Any, where: str, required: set[str], optional: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"{where} must be an object")
    keys = set(value)
    if not required <= keys or not keys <= required | optional:
        unknown = sorted(keys - required - optional)
        raise WireError(f"{where}: missing {sorted(required - keys)}, unknown {unknown}")
    return value


@dataclass(frozen=True)
class ScoredLabel:
    """A label and its probability in parts per million."""

    label: int
    score_ppm: int

    def __post_init__(self) -> None:
        _int(self.label, "label", 0, MAX_LABEL)
        _int(self.score_ppm, "score_ppm", 0, PPM)

    @property
    def score(self) -> float:
        return self.score_ppm / PPM

    def to_json(self) -> dict[str, int]:
        return {"label": self.label, "score_ppm": self.score_ppm}


@dataclass(frozen=True)
class ImageResult:
    """The answer for one image: the predicted ``label``, its ``top_k`` list (scores
    non-increasing, labels distinct, first entry = ``label``) and an optional name."""

    label: int
    top_k: tuple[ScoredLabel, ...]
    label_name: str | None = None

    def __post_init__(self) -> None:
        _int(self.label, "label", 0, MAX_LABEL)
        top = tuple(self.top_k)
        if not 1 <= len(top) <= MAX_TOP_K or not all(isinstance(e, ScoredLabel) for e in top):
            raise WireError(f"top_k holds 1..{MAX_TOP_K} scored labels")
        if top[0].label != self.label:
            raise WireError("the first top_k entry is the predicted label")
        if len({e.label for e in top}) != len(top):
            raise WireError("top_k labels are distinct")
        if any(a.score_ppm < b.score_ppm for a, b in itertools.pairwise(top)):
            raise WireError("top_k scores are non-increasing")
        if self.label_name is not None and (
            not isinstance(self.label_name, str) or not _LABEL_NAME.fullmatch(self.label_name)
        ):
            raise WireError("label_name must be 1..64 printable ASCII characters")
        object.__setattr__(self, "top_k", top)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "top_k": [e.to_json() for e in self.top_k]}
        if self.label_name is not None:
            out["label_name"] = self.label_name
        return out

    @classmethod
    def from_json(cls, value: Any, where: str = "result") -> ImageResult:
        obj = _obj(value, where, {"label", "top_k"}, {"label_name"})
        top = obj["top_k"]
        if not isinstance(top, list):
            raise WireError(f"{where}.top_k must be an array")
        entries: list[ScoredLabel] = []
        for i, item in enumerate(top):
            entry = _obj(item, f"{where}.top_k[{i}]", {"label", "score_ppm"}, set())
            entries.append(
                ScoredLabel(
                    _int(entry["label"], f"{where}.top_k[{i}].label", 0, MAX_LABEL),
                    _int(entry["score_ppm"], f"{where}.top_k[{i}].score_ppm", 0, PPM),
                )
            )
        return cls(obj["label"], tuple(entries), obj.get("label_name"))


@dataclass(frozen=True)
class ClassifyResponse:
    """A ``200`` answer of ``/v1/classify`` (docs/cloud_api.md 4)."""

    codec: str
    results: tuple[ImageResult, ...]
    timings_us: Mapping[str, int]
    bundle_digest: str
    batch_images: int = 0
    """Images in the merged forward pass that served this request (0: not reported)."""

    def __post_init__(self) -> None:
        if not isinstance(self.codec, str) or not CODEC_ID.fullmatch(self.codec):
            raise WireError("codec id must match name/vN")
        results = tuple(self.results)
        if not results or not all(isinstance(r, ImageResult) for r in results):
            raise WireError("results holds at least one image result")
        object.__setattr__(self, "results", results)
        timings = dict(self.timings_us)
        for name, micros in timings.items():
            if not isinstance(name, str) or not _TIMING_NAME.fullmatch(name):
                raise WireError(f"bad timing name {name!r}")
            _int(micros, f"timings_us.{name}", 0, 2**53 - 1)
        object.__setattr__(self, "timings_us", timings)
        if not isinstance(self.bundle_digest, str) or not re.fullmatch(
            r"[0-9a-f]{96}", self.bundle_digest
        ):
            raise WireError("bundle_digest must be 96 lowercase hex digits")
        _int(self.batch_images, "batch_images", 0, 2**32 - 1)

    @property
    def count(self) -> int:
        return len(self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "count": self.count,
            "batch_images": self.batch_images,
            "bundle_digest": self.bundle_digest,
            "results": [r.to_json() for r in self.results],
            "timings_us": dict(sorted(self.timings_us.items())),
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_count: int | None = None) -> ClassifyResponse:
        """Parse a ``200`` body strictly; with ``expected_count``, the number of results
        must be exactly that (one per image sent, in order)."""
        if not isinstance(data, bytes | bytearray) or len(data) > _MAX_RESPONSE_JSON:
            raise WireError("a response body is at most 16 MiB of bytes")
        try:
            value = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise WireError("response is not JSON") from None
        obj = _obj(
            value,
            "response",
            {"codec", "count", "batch_images", "bundle_digest", "results", "timings_us"},
            set(),
        )
        results = obj["results"]
        if not isinstance(results, list):
            raise WireError("results must be an array")
        timings = obj["timings_us"]
        if not isinstance(timings, dict):
            raise WireError("timings_us must be an object")
        response = cls(
            codec=obj["codec"],
            results=tuple(ImageResult.from_json(r, f"results[{i}]") for i, r in enumerate(results)),
            timings_us=timings,
            bundle_digest=obj["bundle_digest"],
            batch_images=obj["batch_images"],
        )
        if obj["count"] != response.count:
            raise WireError("count differs from the number of results")
        if expected_count is not None and response.count != expected_count:
            raise WireError(f"expected {expected_count} results, got {response.count}")
        return response
