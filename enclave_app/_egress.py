"""The egress guard: the only path by which bytes leave the enclave towards the cloud.

Everything the enclave sends to cloud inference goes through :meth:`EgressGuard.classify`,
which builds the request body itself from bit-strings (``cloud_infer`` wire format,
docs/cloud_api.md) and sends it only if the egress policy (``policies.EgressPolicy``,
whose digest the launch configuration, and so HOST_DATA, pins) allows it. The guard owns
the only HTTP client pointed at the cloud; nothing else in the enclave app holds one.

Checklist of :meth:`EgressGuard.classify`, in order; the first failing step refuses the
whole batch, which is audited and **never sent** (:class:`EgressDeniedError`):

G1. Destination: the URL the body would be POSTed to is on the policy's allow-list
    (scheme, host, port, path prefix; ``policies._endpoint``).
G2. Codec: the declared codec id is the policy's ``codec``.
G3. Sizes: the batch holds 1 .. ``max_batch`` images; in the single form every string is
    1 .. ``max_bytes_per_image`` bytes; in the batch form the one stream is at most
    ``count x max_bytes_per_image`` bytes (header included).
G4. Bit-strings: each string is a well-formed bit-string of the codec's format in the
    declared form (``vision.StreamHeader``: version, canonical header, the declared image
    count, the expected latent grid), and, when the guard holds the codec, it decodes
    (rANS) and re-encodes to exactly the same bytes (``vision.decode_*_latents``, which
    includes that integrity check): only the encoder's own output of the declared shape
    passes, so nothing else can be smuggled in the payload.
G5. Rate: a token bucket of ``max_images_per_second`` tokens per second (burst: one
    second's worth) must cover the batch's images; the guard waits up to ``rate_wait``
    seconds for tokens, then refuses.
G6. Only then: one POST of the body with the fixed headers (content type, the cloud
    credential as a bearer token); redirects are not followed. The answer must be a
    well-formed ``/v1/classify`` answer with one result per image
    (:class:`UpstreamError` otherwise: unreachable, timeout, non-200, malformed answer).

The audit (:attr:`EgressGuard.audit`, the most recent ``audit_capacity`` records, plus
an optional ``sink`` callback for a structured log) holds every refusal with its
reasons, and every send with its outcome; counters are in :attr:`EgressGuard.stats`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from cloud_infer import MEDIA_TYPE, ClassifyRequest, ClassifyResponse, WireError
from policies import EgressPolicy
from vision import CodecError, StreamHeader, decode_batch_latents, decode_single_latents

__all__ = [
    "EgressDeniedError",
    "EgressGuard",
    "EgressRecord",
    "EgressStats",
    "TokenBucket",
    "UpstreamError",
]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class EgressDeniedError(Exception):
    """The egress policy refused a batch (nothing was sent); ``reasons`` say why.

    ``size_only``: every reason is a byte bound of G3, so a smaller batch (without the
    image whose string is too large) may pass.
    """

    def __init__(self, reasons: Sequence[str], *, size_only: bool = False) -> None:
        self.reasons = tuple(reasons)
        self.size_only = size_only
        super().__init__("egress denied: " + "; ".join(self.reasons))


class UpstreamError(Exception):
    """Cloud inference could not answer (unreachable, timeout, error status, bad answer)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class EgressRecord:
    """One audit record: a refusal (``refused``) or a send (``sent`` / ``failed``)."""

    time: float
    outcome: str
    destination: str
    codec: str
    count: int
    payload_bytes: int
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "egress",
            "time": self.time,
            "outcome": self.outcome,
            "destination": self.destination,
            "codec": self.codec,
            "count": self.count,
            "payload_bytes": self.payload_bytes,
            "reasons": list(self.reasons),
        }


@dataclass
class EgressStats:
    """Counters since start."""

    batches_sent: int = 0
    images_sent: int = 0
    bytes_sent: int = 0
    refused: int = 0
    upstream_failures: int = 0


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` stored (starts full)."""

    def __init__(self, rate: float, capacity: float, *, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def try_take(self, amount: float) -> float:
        """Take ``amount`` tokens and return 0, or take nothing and return the seconds
        until they would be available (``inf`` when ``amount`` exceeds the capacity)."""
        if amount > self.capacity:
            return float("inf")
        self._refill()
        if self._tokens >= amount:
            self._tokens -= amount
            return 0.0
        return (amount - self._tokens) / self.rate


@dataclass
class _Shape:
    latent_side: int
    max_batch: int


@dataclass
class EgressGuard:
    """Enforces the egress policy on every batch sent to cloud inference.

    ``destination`` is the full URL of the cloud's ``/v1/classify``; ``credential`` the
    cloud credential released to the enclave (sent as ``Authorization: Bearer``);
    ``codec`` the enclave's codec (enables G4's decode-and-re-encode check);
    ``latent_side`` the latent grid every bit-string must have (input size / 16);
    ``top_k`` the fixed number of labels asked of the cloud (not a client's choice, so
    that no client-controlled value leaves the enclave).
    """

    policy: EgressPolicy
    destination: str
    credential: str = field(repr=False)
    latent_side: int
    codec: Any = field(default=None, repr=False)
    top_k: int = 10
    max_batch: int = 256
    timeout: float = 10.0
    rate_wait: float = 1.0
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False)
    clock: Clock = time.monotonic
    sleep: Sleep = asyncio.sleep
    sink: Callable[[EgressRecord], None] | None = None
    audit_capacity: int = 1000
    _bucket: TokenBucket = field(init=False, repr=False)
    _records: deque[EgressRecord] = field(init=False, repr=False)
    _client: httpx.AsyncClient | None = field(init=False, default=None, repr=False)
    _lock: asyncio.Lock | None = field(init=False, default=None, repr=False)
    stats: EgressStats = field(init=False, default_factory=EgressStats)

    def __post_init__(self) -> None:
        rate = self.policy.max_images_per_second
        self._bucket = TokenBucket(rate, rate, clock=self.clock)
        self._records = deque(maxlen=self.audit_capacity)
        if not self.credential or any(c in self.credential for c in "\r\n"):
            raise ValueError("the cloud credential must be a non-empty single-line token")
        if not 1 <= self.top_k <= 100:
            raise ValueError("top_k must be 1..100")

    # -- audit ---------------------------------------------------------------------

    @property
    def audit(self) -> tuple[EgressRecord, ...]:
        """The most recent audit records, oldest first."""
        return tuple(self._records)

    @property
    def refusals(self) -> tuple[EgressRecord, ...]:
        return tuple(r for r in self._records if r.outcome == "refused")

    def _record(
        self, outcome: str, codec: str, count: int, size: int, reasons: Sequence[str]
    ) -> None:
        record = EgressRecord(
            time=time.time(),
            outcome=outcome,
            destination=self.destination,
            codec=codec,
            count=count,
            payload_bytes=size,
            reasons=tuple(reasons),
        )
        self._records.append(record)
        if self.sink is not None:
            self.sink(record)

    def _refuse(
        self,
        codec: str,
        count: int,
        size: int,
        reasons: Sequence[str],
        *,
        size_only: bool = False,
    ) -> EgressDeniedError:
        self.stats.refused += 1
        self._record("refused", codec, count, size, reasons)
        return EgressDeniedError(reasons, size_only=size_only)

    # -- checks --------------------------------------------------------------------

    def check(
        self, codec: str, strings: Sequence[bytes], count: int, *, batch_form: bool
    ) -> list[str]:
        """G1-G4 (stateless): why this batch may not leave (empty: it may)."""
        return [reason for _, reason in self._violations(codec, strings, count, batch_form)]

    def _violations(
        self, codec: str, strings: Sequence[bytes], count: int, batch_form: bool
    ) -> list[tuple[str, str]]:
        """G1-G4 as (kind, reason) pairs; kind ``size`` marks the byte bounds of G3."""
        policy = self.policy
        out: list[tuple[str, str]] = []
        # G1
        if not policy.destination_allowed(self.destination):
            out.append(("destination", f"destination {self.destination!r} is not allow-listed"))
        # G2
        if codec != policy.codec:
            out.append(("codec", f"codec {codec!r} is not the allowed {policy.codec!r}"))
        # G3
        limit = policy.max_bytes_per_image
        if not 1 <= count <= self.max_batch:
            out.append(("count", f"batch of {count} images outside 1 .. {self.max_batch}"))
            return out
        if batch_form:
            if len(strings) != 1:
                out.append(("form", "the batch form carries exactly one stream"))
                return out
            if not 1 <= len(strings[0]) <= count * limit:
                out.append(
                    (
                        "size",
                        f"stream of {len(strings[0])} bytes for {count} images outside "
                        f"1 .. {count * limit}",
                    )
                )
        else:
            if len(strings) != count:
                out.append(("form", f"{len(strings)} strings for {count} images"))
                return out
            for index, s in enumerate(strings):
                if not 1 <= len(s) <= limit:
                    out.append(("size", f"string {index}: {len(s)} bytes outside 1 .. {limit}"))
        if out:
            return out
        # G4
        out.extend(
            ("bitstring", reason)
            for reason in self._check_bitstrings(strings, count, batch_form=batch_form)
        )
        return out

    def _check_bitstrings(
        self, strings: Sequence[bytes], count: int, *, batch_form: bool
    ) -> list[str]:
        side = self.latent_side
        for index, s in enumerate(strings):
            try:
                header = StreamHeader.from_bytes(s)
            except CodecError as exc:
                return [f"string {index} is not a bit-string of the codec: {exc}"]
            expected_count = count if batch_form else 1
            if header.batch != batch_form or header.count != expected_count:
                return [f"string {index} does not declare the batch's form and image count"]
            if (header.height, header.width) != (side, side):
                return [
                    f"string {index} has latent grid {header.height}x{header.width}, "
                    f"expected {side}x{side}"
                ]
        if self.codec is not None:
            try:
                if batch_form:
                    decode_batch_latents(self.codec, strings[0])
                else:
                    decode_single_latents(self.codec, list(strings))
            except CodecError as exc:
                return [f"not the codec's own output: {exc}"]
        return []

    async def _take_tokens(self, count: int) -> float:
        """G5: wait (up to ``rate_wait``) for ``count`` tokens; returns the remaining wait
        that would be needed (0: taken)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            deadline = self.clock() + self.rate_wait
            while True:
                wait = self._bucket.try_take(count)
                if wait == 0.0:
                    return 0.0
                if self.clock() + wait > deadline:
                    return wait
                await self.sleep(wait)

    # -- sending -------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.transport,
                timeout=self.timeout,
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def classify(
        self, codec: str, strings: Sequence[bytes], count: int, *, batch_form: bool
    ) -> ClassifyResponse:
        """Check (G1-G5) and send (G6) one batch; its per-image results, in order."""
        strings = tuple(strings)
        size = sum(len(s) for s in strings)
        # G1-G4 off the event loop: G4 entropy-decodes the batch
        violations = await asyncio.to_thread(self._violations, codec, strings, count, batch_form)
        if violations:
            raise self._refuse(
                codec,
                count,
                size,
                [reason for _, reason in violations],
                size_only=all(kind == "size" for kind, _ in violations),
            )
        wait = await self._take_tokens(count)
        if wait:
            raise self._refuse(
                codec,
                count,
                size,
                [f"rate limit of {self.policy.max_images_per_second} images/s exceeded"],
            )
        try:
            if batch_form:
                request = ClassifyRequest.batch(codec, strings[0], count, top_k=self.top_k)
            else:
                request = ClassifyRequest.single(codec, strings, top_k=self.top_k)
        except WireError as exc:
            raise self._refuse(codec, count, size, [f"not encodable: {exc}"]) from None
        body = request.to_bytes()
        try:
            response = await self._http().post(
                self.destination,
                content=body,
                headers={
                    "Content-Type": MEDIA_TYPE,
                    "Accept": "application/json",
                    "Authorization": f"Bearer {self.credential}",
                },
            )
        except httpx.TimeoutException:
            raise self._failed(codec, count, size, "cloud inference timed out") from None
        except httpx.HTTPError as exc:
            raise self._failed(
                codec, count, size, f"cloud inference unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code != 200:
            raise self._failed(
                codec,
                count,
                size,
                f"cloud inference answered {response.status_code}",
                status=response.status_code,
            )
        try:
            answer = ClassifyResponse.from_bytes(response.content, expected_count=count)
        except WireError as exc:
            raise self._failed(codec, count, size, f"malformed cloud answer: {exc}") from None
        self.stats.batches_sent += 1
        self.stats.images_sent += count
        self.stats.bytes_sent += size
        self._record("sent", codec, count, size, ())
        return answer

    def _failed(
        self, codec: str, count: int, size: int, message: str, *, status: int | None = None
    ) -> UpstreamError:
        self.stats.upstream_failures += 1
        self._record("failed", codec, count, size, (message,))
        return UpstreamError(message, status=status)
