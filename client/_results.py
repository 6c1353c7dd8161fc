"""What :meth:`Client.classify` returns per image: the label and scores, the bytes sent
(the paper's S1: the JPEG; the sealed envelope actually on the wire; and the paper's
S2: the neural bit-string the enclave sent to the cloud, from the sealed answer) and the
latency breakdown (the paper's Figure 4 stages as the client sees them, plus the
enclave's own stage timings from the sealed answer).

>>> from sealed import ScoredLabel
>>> c = Classification(
...     source="cat.jpg", label=3, label_name="cat",
...     scores=(ScoredLabel(3, 912_345), ScoredLabel(5, 40_000)),
...     bytes_sent=BytesSent(jpeg=1848, envelope=3120, response=280, reencoded=False,
...                          bitstring_batch=261, batch_images=32),
...     timings=Timings(jpeg_ms=0.4, seal_ms=0.1, round_trip_ms=7.0, open_ms=0.05,
...                     server_ms={"perturb": 2.6, "encode": 0.55, "cloud": 1.3}),
...     key_id="8b9b50288b5b4aa64dfabb7355f3bc0c", request_id="r-1", size=(32, 32))
>>> round(c.score, 4), c.timings.total_ms
(0.9123, 7.55)
>>> c.to_dict()["bytes_sent"]["jpeg"], c.bytes_sent.bitstring_per_image
(1848, 8.15625)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sealed import ScoredLabel

__all__ = ["BytesSent", "Classification", "Timings"]


@dataclass(frozen=True)
class BytesSent:
    """Sizes for one image: ``jpeg`` is the JPEG inside the envelope (the paper's S1
    payload), ``envelope`` the sealed request on the wire (JPEG + options + response
    key + padding + HPKE framing), ``response`` the sealed answer received;
    ``reencoded``: whether the client encoded the JPEG (``False``: the caller's JPEG
    was sent unchanged).

    The enclave's egress to the cloud for this image (the paper's S2; protocol.md
    6.3.1, ``None`` when not asked for: ``ClientConfig(sizes=False)``): the enclave
    batches concurrent requests and sent ``bitstring_batch`` bit-string bytes for the
    ``batch_images`` images of this image's batch; ``bitstring`` is this image's own
    bit-string, known only when the enclave sends one string per image (single form;
    ``None`` in the batch form, where the images share one stream).
    :attr:`bitstring_batch_share` is the amortised share, :attr:`bitstring_per_image`
    this image's S2 (its own string when known, else the share).
    """

    jpeg: int
    envelope: int
    response: int
    reencoded: bool
    bitstring: int | None = None
    bitstring_batch: int | None = None
    batch_images: int | None = None

    @property
    def bitstring_batch_share(self) -> float | None:
        """``bitstring_batch / batch_images`` (``None`` without sizes)."""
        if self.bitstring_batch is None or not self.batch_images:
            return None
        return self.bitstring_batch / self.batch_images

    @property
    def bitstring_per_image(self) -> float | None:
        """The paper's S2 for this image: ``bitstring`` when known, else the share."""
        return float(self.bitstring) if self.bitstring is not None else self.bitstring_batch_share

    def to_dict(self) -> dict[str, Any]:
        return {
            "jpeg": self.jpeg,
            "envelope": self.envelope,
            "response": self.response,
            "reencoded": self.reencoded,
            "bitstring": self.bitstring,
            "bitstring_batch": self.bitstring_batch,
            "batch_images": self.batch_images,
            "bitstring_batch_share": self.bitstring_batch_share,
            "bitstring_per_image": self.bitstring_per_image,
        }


@dataclass(frozen=True)
class Timings:
    """Latency of one image in milliseconds, as the client measured it: ``jpeg_ms``
    (reading and encoding the image), ``seal_ms`` (HPKE), ``round_trip_ms`` (``POST
    /v1/infer`` until the answer was read: network, gateway, enclave, cloud),
    ``open_ms`` (opening the sealed answer), ``reattest_ms`` (attesting again because
    the enclave's key changed, 0 usually); ``server_ms``: the enclave's stage timings
    from the sealed answer (``open``, ``decode``, ``queue``, ``perturb``, ``encode``,
    ``cloud``, ``cloud_*``, ``total``; batch stages are the batch's)."""

    jpeg_ms: float
    seal_ms: float
    round_trip_ms: float
    open_ms: float
    server_ms: Mapping[str, float] = field(default_factory=dict)
    reattest_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        """Client-side total: JPEG + seal + round trip + open + re-attestation."""
        return round(
            self.jpeg_ms + self.seal_ms + self.round_trip_ms + self.open_ms + self.reattest_ms, 3
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "jpeg_ms": self.jpeg_ms,
            "seal_ms": self.seal_ms,
            "round_trip_ms": self.round_trip_ms,
            "open_ms": self.open_ms,
            "reattest_ms": self.reattest_ms,
            "total_ms": self.total_ms,
            "server_ms": dict(self.server_ms),
        }


@dataclass(frozen=True)
class Classification:
    """The answer for one image: ``label`` (class index), ``label_name`` (when the
    cloud model names its classes), ``scores`` (the top-k labels with scores in parts
    per million, best first), the sizes and timings, the enclave ``key_id`` the image
    was sealed to, the ``request_id`` echoed in the sealed answer, the pixel ``size``
    of the JPEG sent, and the ``source`` (a path or a description of the input)."""

    source: str
    label: int
    label_name: str | None
    scores: tuple[ScoredLabel, ...]
    bytes_sent: BytesSent
    timings: Timings
    key_id: str
    request_id: str
    size: tuple[int, int]

    @property
    def score(self) -> float:
        """The predicted label's probability (0..1)."""
        return self.scores[0].score if self.scores else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (``pmc2 classify --json``)."""
        return {
            "source": self.source,
            "label": self.label,
            "label_name": self.label_name,
            "scores": [{"label": s.label, "score": s.score} for s in self.scores],
            "bytes_sent": self.bytes_sent.to_dict(),
            "timings": self.timings.to_dict(),
            "key_id": self.key_id,
            "request_id": self.request_id,
            "size": list(self.size),
        }
