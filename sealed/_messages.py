"""What travels inside the envelopes: request options and the response body.

Specification: docs/protocol.md, sections 6.2 (options) and 6.3 (response body; the
optional ``sizes`` member in 6.3.1). Both are
canonical JSON (``sealed._canon``) with a fixed schema; decoding is strict: unknown or
missing members, wrong types, out-of-range values and non-canonical encodings are all
``MalformedError``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import TypeAlias

from sealed._canon import JsonValue, canonical_json, parse_canonical_json
from sealed._errors import MalformedError

__all__ = [
    "MAX_BATCH_IMAGES",
    "MAX_TOP_K",
    "BitstringSizes",
    "InferenceFailure",
    "InferenceResponse",
    "InferenceResult",
    "RequestOptions",
    "ScoredLabel",
    "decode_response_body",
    "encode_response_body",
]

MAX_TOP_K = 100
MAX_LABEL = 65535
PPM = 1_000_000
MAX_TIMINGS = 32
MAX_MESSAGE_CHARS = 256
MAX_BATCH_IMAGES = 65535
MAX_SAFE_INTEGER = 2**53 - 1
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_LABEL_NAME = re.compile(r"[ -~]{1,64}")
_MESSAGE = re.compile(rf"[ -~]{{0,{MAX_MESSAGE_CHARS}}}")


def _int(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedError(f"{where} must be an integer in {low}..{high}")
    return value


def _text(value: object, where: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise MalformedError(f"{where} must match {pattern.pattern}")
    return value


def _members(
    value: object, where: str, required: set[str], optional: set[str]
) -> dict[str, object]:
    if not isinstance(value, dict):
        raise MalformedError(f"{where} must be a JSON object")
    keys = set(value)
    if missing := required - keys:
        raise MalformedError(f"{where} lacks {sorted(missing)}")
    if unknown := keys - required - optional:
        raise MalformedError(f"{where} has unknown members {sorted(unknown)}")
    return value


@dataclass(frozen=True)
class RequestOptions:
    """Options of one inference request.

    ``top_k``: how many (label, score) pairs the answer lists, 1..100 (default 1).
    ``request_id``: an optional client correlation id, 1..64 of ``[A-Za-z0-9._:-]``,
    echoed in the answer.
    ``sizes``: ask for the ``sizes`` member in a successful answer (:class:`BitstringSizes`);
    encoded as ``"sizes":1`` when true and omitted when false (protocol.md 6.2; an enclave
    older than this member refuses the option as ``malformed``).
    """

    top_k: int = 1
    request_id: str | None = None
    sizes: bool = False

    def __post_init__(self) -> None:
        _int(self.top_k, "top_k", 1, MAX_TOP_K)
        if self.request_id is not None:
            _text(self.request_id, "request_id", _REQUEST_ID)
        if not isinstance(self.sizes, bool):
            raise MalformedError("sizes is a bool")

    def to_json(self) -> dict[str, JsonValue]:
        value: dict[str, JsonValue] = {"top_k": self.top_k}
        if self.request_id is not None:
            value["request_id"] = self.request_id
        if self.sizes:
            value["sizes"] = 1
        return value

    def to_bytes(self) -> bytes:
        """The canonical JSON encoding, e.g. ``{"request_id":"r-1","top_k":3}``."""
        return canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> RequestOptions:
        value = _members(parse_canonical_json(data), "options", {"top_k"}, {"request_id", "sizes"})
        request_id = value.get("request_id")
        if "sizes" in value:
            _int(value["sizes"], "sizes", 1, 1)
        return cls(
            top_k=_int(value["top_k"], "top_k", 1, MAX_TOP_K),
            request_id=None if request_id is None else _text(request_id, "request_id", _REQUEST_ID),
            sizes="sizes" in value,
        )


@dataclass(frozen=True)
class ScoredLabel:
    """One entry of the answer's top-k list: a class label and its score in parts per
    million (``score_ppm`` 0..1000000; :attr:`score` is the same as a float in 0..1)."""

    label: int
    score_ppm: int

    def __post_init__(self) -> None:
        _int(self.label, "label", 0, MAX_LABEL)
        _int(self.score_ppm, "score_ppm", 0, PPM)

    @property
    def score(self) -> float:
        return self.score_ppm / PPM

    @classmethod
    def from_probability(cls, label: int, probability: float) -> ScoredLabel:
        """Round a probability in [0, 1] to parts per million."""
        if not 0.0 <= probability <= 1.0:
            raise MalformedError("a probability is in [0, 1]")
        return cls(label, round(probability * PPM))


@dataclass(frozen=True)
class BitstringSizes:
    """What the enclave's egress guard sent to cloud inference for the batch that carried
    this image (protocol.md 6.3.1), the paper's S2:

    ``batch_images``: images in that batch, this one included (1..65535);
    ``batch_bitstring_bytes``: the bit-string bytes sent for the batch (1..2**53-1): in
    the batch form the one stream, its header included; in the single form the sum of
    the per-image strings (the cloud request's framing is not counted);
    ``bitstring_bytes``: this image's own bit-string, known only in the single form
    (``None`` in the batch form, where the images share one stream); at most
    ``batch_bitstring_bytes - (batch_images - 1)``, since every other string of the
    batch has at least one byte.

    >>> s = BitstringSizes(batch_images=4, batch_bitstring_bytes=42)
    >>> s.share_bytes, s.per_image_bytes
    (10.5, 10.5)
    >>> BitstringSizes(batch_images=2, batch_bitstring_bytes=17, bitstring_bytes=9).per_image_bytes
    9
    """

    batch_images: int
    batch_bitstring_bytes: int
    bitstring_bytes: int | None = None

    def __post_init__(self) -> None:
        _int(self.batch_images, "sizes.batch_images", 1, MAX_BATCH_IMAGES)
        _int(self.batch_bitstring_bytes, "sizes.batch_bitstring_bytes", 1, MAX_SAFE_INTEGER)
        if self.bitstring_bytes is not None:
            most = self.batch_bitstring_bytes - (self.batch_images - 1)
            if most < 1:
                raise MalformedError("sizes: a single-form batch has at least one byte per image")
            _int(self.bitstring_bytes, "sizes.bitstring_bytes", 1, most)

    @property
    def share_bytes(self) -> float:
        """The amortised per-image share: ``batch_bitstring_bytes / batch_images``."""
        return self.batch_bitstring_bytes / self.batch_images

    @property
    def per_image_bytes(self) -> int | float:
        """This image's S2: its own ``bitstring_bytes`` when known, else the share."""
        return self.bitstring_bytes if self.bitstring_bytes is not None else self.share_bytes

    def to_json(self) -> dict[str, JsonValue]:
        value: dict[str, JsonValue] = {
            "batch_bitstring_bytes": self.batch_bitstring_bytes,
            "batch_images": self.batch_images,
        }
        if self.bitstring_bytes is not None:
            value["bitstring_bytes"] = self.bitstring_bytes
        return value

    @classmethod
    def from_json(cls, value: object) -> BitstringSizes:
        member = _members(
            value, "sizes", {"batch_images", "batch_bitstring_bytes"}, {"bitstring_bytes"}
        )
        own = member.get("bitstring_bytes")
        return cls(
            batch_images=_int(member["batch_images"], "sizes.batch_images", 1, MAX_BATCH_IMAGES),
            batch_bitstring_bytes=_int(
                member["batch_bitstring_bytes"], "sizes.batch_bitstring_bytes", 1, MAX_SAFE_INTEGER
            ),
            bitstring_bytes=(
                None if own is None else _int(own, "sizes.bitstring_bytes", 1, MAX_SAFE_INTEGER)
            ),
        )


@dataclass(frozen=True)
class InferenceResult:
    """A successful answer: the predicted ``label`` and the ``top_k`` list (scores
    non-increasing, distinct labels, the first entry being ``label``), an optional
    human-readable ``label_name``, per-stage ``timings_us`` (name, microseconds) pairs,
    the ``request_id`` of the request (filled in by ``seal_response``), and the
    bit-string ``sizes`` (only in answers to requests that asked for them:
    ``seal_response`` drops them otherwise)."""

    label: int
    top_k: tuple[ScoredLabel, ...]
    label_name: str | None = None
    timings_us: tuple[tuple[str, int], ...] = ()
    request_id: str | None = None
    sizes: BitstringSizes | None = None

    def __post_init__(self) -> None:
        _int(self.label, "label", 0, MAX_LABEL)
        if not isinstance(self.top_k, tuple) or not 1 <= len(self.top_k) <= MAX_TOP_K:
            raise MalformedError(f"top_k holds 1..{MAX_TOP_K} entries")
        if not all(isinstance(entry, ScoredLabel) for entry in self.top_k):
            raise MalformedError("top_k holds ScoredLabel entries")
        if self.top_k[0].label != self.label:
            raise MalformedError("the first top_k entry is the predicted label")
        if len({entry.label for entry in self.top_k}) != len(self.top_k):
            raise MalformedError("top_k labels are distinct")
        scores = [entry.score_ppm for entry in self.top_k]
        if any(a < b for a, b in itertools.pairwise(scores)):
            raise MalformedError("top_k scores are non-increasing")
        if self.label_name is not None:
            _text(self.label_name, "label_name", _LABEL_NAME)
        timings = tuple(sorted(self.timings_us))
        if len(timings) > MAX_TIMINGS or len({name for name, _ in timings}) != len(timings):
            raise MalformedError(f"at most {MAX_TIMINGS} distinct timing names")
        for name, micros in timings:
            _text(name, "timing name", _NAME)
            _int(micros, f"timings_us.{name}", 0, 2**53 - 1)
        object.__setattr__(self, "timings_us", timings)
        if self.request_id is not None:
            _text(self.request_id, "request_id", _REQUEST_ID)
        if self.sizes is not None and not isinstance(self.sizes, BitstringSizes):
            raise MalformedError("sizes is a BitstringSizes")

    @property
    def timings(self) -> dict[str, int]:
        return dict(self.timings_us)


@dataclass(frozen=True)
class InferenceFailure:
    """An answer that reports a failure after the request was opened (the image could
    not be decoded, the cloud is unavailable, ...). ``code`` is a short kebab/snake-case
    name (``[a-z][a-z0-9_-]{0,31}``; the registry is in protocol.md 6.3), ``message`` a
    printable-ASCII explanation of at most 256 characters."""

    code: str
    message: str = ""
    request_id: str | None = None

    def __post_init__(self) -> None:
        _text(self.code, "code", _NAME)
        _text(self.message, "message", _MESSAGE)
        if self.request_id is not None:
            _text(self.request_id, "request_id", _REQUEST_ID)


InferenceResponse: TypeAlias = InferenceResult | InferenceFailure


def encode_response_body(response: InferenceResponse) -> bytes:
    """The canonical JSON body of a response (protocol.md 6.3)."""
    value: dict[str, JsonValue]
    if isinstance(response, InferenceResult):
        value = {
            "status": "ok",
            "label": response.label,
            "top_k": [
                {"label": entry.label, "score_ppm": entry.score_ppm} for entry in response.top_k
            ],
            "timings_us": dict(response.timings_us),
        }
        if response.label_name is not None:
            value["label_name"] = response.label_name
        if response.sizes is not None:
            value["sizes"] = response.sizes.to_json()
    else:
        value = {"status": "error", "code": response.code, "message": response.message}
    if response.request_id is not None:
        value["request_id"] = response.request_id
    return canonical_json(value)


def decode_response_body(data: bytes) -> InferenceResponse:
    """Parse a response body strictly (protocol.md 6.3)."""
    parsed = parse_canonical_json(data)
    if not isinstance(parsed, dict):
        raise MalformedError("a response body is a JSON object")
    status = parsed.get("status")
    request_id = parsed.get("request_id")
    rid = None if request_id is None else _text(request_id, "request_id", _REQUEST_ID)
    if status == "ok":
        value = _members(
            parsed,
            "response",
            {"status", "label", "top_k", "timings_us"},
            {"label_name", "request_id", "sizes"},
        )
        entries = value["top_k"]
        if not isinstance(entries, list):
            raise MalformedError("top_k is an array")
        top_k = []
        for entry in entries:
            member = _members(entry, "top_k entry", {"label", "score_ppm"}, set())
            top_k.append(
                ScoredLabel(
                    _int(member["label"], "label", 0, MAX_LABEL),
                    _int(member["score_ppm"], "score_ppm", 0, PPM),
                )
            )
        timings = value["timings_us"]
        if not isinstance(timings, dict):
            raise MalformedError("timings_us is an object")
        label_name = value.get("label_name")
        sizes = value.get("sizes")
        return InferenceResult(
            label=_int(value["label"], "label", 0, MAX_LABEL),
            top_k=tuple(top_k),
            label_name=None if label_name is None else _text(label_name, "label_name", _LABEL_NAME),
            timings_us=tuple(
                (_text(name, "timing name", _NAME), _int(micros, name, 0, 2**53 - 1))
                for name, micros in timings.items()
            ),
            request_id=rid,
            sizes=None if sizes is None else BitstringSizes.from_json(sizes),
        )
    if status == "error":
        value = _members(parsed, "response", {"status", "code", "message"}, {"request_id"})
        return InferenceFailure(
            code=_text(value["code"], "code", _NAME),
            message=_text(value["message"], "message", _MESSAGE),
            request_id=rid,
        )
    raise MalformedError('a response body has status "ok" or "error"')
