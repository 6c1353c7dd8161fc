"""The running enclave: sealed requests in, sealed answers out, token kept fresh.

:class:`Enclave` wraps what :func:`enclave_app._boot.boot` produced. Handling of one
sealed request (:meth:`Enclave.handle`), in order:

1. Admission: if the batch queue is full, :class:`OverloadedError` before anything is opened
   (the internal API answers 503 with Retry-After; nothing is lost, the client retries).
2. Open (``sealed.open_request`` with the current key; on a worker thread): errors before
   a successful open are ``SealedError`` (clear-text problem documents, protocol.md 8).
3. Decode the JPEG under the image limits (``_image.decode_jpeg``, worker thread):
   ``invalid-image``.
4. Queue the image for dynamic batching (``_batcher``); each batch is perturbed and
   encoded on the inference thread (``_engine``), then sent through the egress guard
   (``_egress``) in one call to cloud inference (a batch refused only for its size is
   split in halves and re-sent, so an image whose bit-string is too large fails
   alone): ``egress-denied``,
   ``upstream-unavailable``; the whole of steps 3-5 within ``request_timeout``:
   ``timeout``; anything unexpected: ``internal`` (no details).
5. Seal the answer under the request's response key: the label, the client's ``top_k``
   (at most what the cloud returned), the label name, and per-stage timings in
   microseconds (``open``, ``decode``, ``queue``, ``perturb``, ``encode``, ``cloud`` (the
   round trip), the cloud's own ``cloud_queue``, ``cloud_entropy_decode``,
   ``cloud_synthesis``, ``cloud_classify``, and ``total``; batch stages are the batch's),
   and, when the client's options asked for them, the bit-string ``sizes`` of the batch
   the egress guard sent (protocol.md 6.3.1: its images, its bit-string bytes, and in
   the single form this image's own string; after a split, the part that was sent).

The attestation-result token is refreshed in the background before it expires (at
``refresh_fraction`` of its lifetime before expiry, at least ``refresh_min_margin``
seconds, with back-off while the attestation service is unavailable); the key pair
stays the same. An expired token makes :meth:`attestation_document` refuse (the gateway
must not hand out stale attestations) while sealed requests are still served.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from attestation import AttestationResult, runtime_data_hash
from cloud_infer import ImageResult
from enclave_app._batcher import DynamicBatcher, OverloadedError
from enclave_app._boot import Booted, BootError, attest_with_retry
from enclave_app._egress import EgressDeniedError, EgressGuard, EgressRecord, UpstreamError
from enclave_app._image import ImageError, decode_jpeg
from sealed import (
    BitstringSizes,
    InferenceFailure,
    InferenceResponse,
    InferenceResult,
    OpenedRequest,
    ScoredLabel,
    open_request,
)

__all__ = ["CLIENT_NONCE_SIZES", "Enclave", "EnclaveNotReadyError"]

CLIENT_NONCE_SIZES = (16, 64)
_CLOUD_TIMINGS = ("queue", "entropy_decode", "synthesis", "classify")
"""Stage timings of the cloud's answer copied into the sealed answer as ``cloud_<name>``."""
AsyncSleep = Callable[[float], Awaitable[None]]


class EnclaveNotReadyError(Exception):
    """The enclave cannot give what was asked now (e.g. its token expired)."""


@dataclass(frozen=True)
class _Item:
    image: npt.NDArray[np.uint8]
    submitted_ns: int


@dataclass(frozen=True)
class _ItemResult:
    result: ImageResult
    queue_us: int
    perturb_us: int
    encode_us: int
    cloud_us: int
    batch_size: int
    sizes: BitstringSizes
    cloud_timings: tuple[tuple[str, int], ...] = ()


def _ascii(text: str, limit: int = 200) -> str:
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean[:limit]


def _us(ns: int) -> int:
    return max(0, ns // 1000)


class Enclave:
    """A booted enclave (see the module docstring). ``await start()`` before serving."""

    def __init__(
        self,
        booted: Booted,
        *,
        egress_sink: Callable[[EgressRecord], None] | None = None,
        async_sleep: AsyncSleep = asyncio.sleep,
    ) -> None:
        self._booted = booted
        self.config = booted.config
        self.key_pair = booted.key_pair
        self.engine = booted.engine
        self.bundle_digest = booted.bundle_digest
        self.client = booted.client
        self._attestation = booted.attestation
        self._async_sleep = async_sleep
        cfg = self.config
        self.guard = EgressGuard(
            policy=cfg.egress_policy,
            destination=cfg.classify_url,
            credential=booted.credential,
            latent_side=self.engine.latent_side,
            codec=self.engine.codec,
            top_k=cfg.cloud_top_k,
            max_batch=cfg.batching.max_batch,
            timeout=cfg.cloud_timeout,
            rate_wait=cfg.egress_rate_wait,
            transport=cfg.cloud_transport,
            sink=egress_sink,
        )
        self.batcher: DynamicBatcher[_Item, _ItemResult] = DynamicBatcher(
            self._process_batch, cfg.batching
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pmc2-inference")
        self._refresh_task: asyncio.Task[None] | None = None
        self.last_refresh_error: str | None = None
        self.refreshes = 0
        self.outcomes: Counter[str] = Counter()
        self.started_at = time.time()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, *, refresh: bool = True) -> None:
        """Start batching and (unless ``refresh`` is false) the token refresh task."""
        self.batcher.start()
        if refresh and self._refresh_task is None:
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def aclose(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh_task
            self._refresh_task = None
        await self.batcher.aclose()
        await self.guard.aclose()
        self._executor.shutdown(wait=True)
        self.client.close()

    # -- attestation ---------------------------------------------------------------

    @property
    def attestation(self) -> AttestationResult:
        return self._attestation

    def token_valid(self, now: datetime | None = None) -> bool:
        at = now or self.config.clock()
        return at < self._attestation.expires_at

    def attestation_document(self) -> dict[str, Any]:
        """The current token and key: exactly ``key_id``, ``token``, ``public_key_jwk``
        (``GET /internal/attestation``, docs/gateway_api.md 4.1)."""
        if not self.token_valid():
            raise EnclaveNotReadyError("the attestation token expired and is being refreshed")
        return {
            "key_id": self.key_pair.key_id.hex,
            "token": self._attestation.token,
            "public_key_jwk": self.key_pair.public_key.to_jwk(),
        }

    def evidence(self, nonce: bytes) -> dict[str, Any]:
        """Fresh evidence bound to a client's ``nonce`` and this enclave's key (blocking:
        it asks the platform for a report). The client verifies it itself or through the
        attestation service's ``/v1/verify``."""
        low, high = CLIENT_NONCE_SIZES
        if not low <= len(nonce) <= high:
            raise ValueError(f"a client nonce is {low} to {high} bytes")
        public_key = self.key_pair.public_key
        guest = self.config.provider.get_report(
            runtime_data_hash(nonce, public_key), self.config.vmpl
        )

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

        evidence: dict[str, Any] = {"report": b64(guest.report)}
        if len(guest.certs):
            evidence["cert_table"] = b64(guest.certs.to_bytes())
        return {
            "key_id": self.key_pair.key_id.hex,
            "public_key_jwk": public_key.to_jwk(),
            "nonce": b64(nonce),
            "evidence": evidence,
        }

    def refresh_delay(self, now: datetime | None = None) -> float:
        """Seconds until the token should be refreshed (0: now)."""
        result = self._attestation
        at = now or self.config.clock()
        lifetime = (result.expires_at - result.issued_at).total_seconds()
        margin = max(self.config.refresh_min_margin, lifetime * self.config.refresh_fraction)
        margin = min(margin, lifetime / 2)
        refresh_at = result.expires_at.timestamp() - margin
        return max(0.0, refresh_at - at.timestamp())

    def refresh_token(self) -> AttestationResult:
        """Attest again with the same key (new nonce, new report); blocking. Raises
        :class:`BootError` (``unavailable`` when the service could not be reached)."""
        result = attest_with_retry(self.config, self.client, self.key_pair, retry_attempts=1)
        self._attestation = result
        self.refreshes += 1
        self.last_refresh_error = None
        return result

    async def _refresh_loop(self) -> None:
        failures = 0
        retry = self.config.refresh_retry
        while True:
            if failures == 0:
                await self._async_sleep(self.refresh_delay())
            try:
                await asyncio.to_thread(self.refresh_token)
                failures = 0
            except BootError as exc:
                self.last_refresh_error = str(exc)
                await self._async_sleep(retry.delay(min(failures, 30), self.config.rng))
                failures += 1

    # -- serving -------------------------------------------------------------------

    def _open(self, envelope: bytes) -> OpenedRequest:
        return open_request(envelope, [self.key_pair], limits=self.config.sealed_limits)

    async def handle(self, envelope: bytes) -> bytes:
        """One sealed request → its sealed answer (see the module docstring).

        Raises ``sealed.SealedError`` when the envelope cannot be opened and
        :class:`OverloadedError` when the queue is full.
        """
        start = time.perf_counter_ns()
        # 1.
        if self.batcher.queued >= self.batcher.config.max_queue:
            raise OverloadedError("the enclave's queue is full")
        loop = asyncio.get_running_loop()
        # 2.
        opened = await loop.run_in_executor(None, self._open, envelope)
        opened_ns = time.perf_counter_ns()
        try:
            response = await asyncio.wait_for(
                self._infer(opened, start, opened_ns), self.config.request_timeout
            )
        except TimeoutError:
            response = InferenceFailure("timeout", "the request timed out inside the enclave")
        except Exception:
            response = InferenceFailure("internal", "internal error")
        self.outcomes["ok" if isinstance(response, InferenceResult) else response.code] += 1
        # 5.
        return opened.seal_response(response)

    async def _infer(self, opened: OpenedRequest, start: int, opened_ns: int) -> InferenceResponse:
        loop = asyncio.get_running_loop()
        size = self.config.input_size
        # 3.
        try:
            image = await loop.run_in_executor(
                None, decode_jpeg, opened.jpeg, size, self.config.image_limits
            )
        except ImageError as exc:
            return InferenceFailure("invalid-image", _ascii(str(exc)))
        decoded_ns = time.perf_counter_ns()
        # 4.
        try:
            item = await self.batcher.submit(_Item(image, decoded_ns))
        except EgressDeniedError as exc:
            reason = "the egress policy refused the bit-string: " + exc.reasons[0]
            return InferenceFailure("egress-denied", _ascii(reason))
        except UpstreamError as exc:
            return InferenceFailure("upstream-unavailable", _ascii(str(exc)))
        except OverloadedError:
            return InferenceFailure("internal", "the enclave is overloaded; retry later")
        end = time.perf_counter_ns()
        cloud = item.result
        top = tuple(ScoredLabel(e.label, e.score_ppm) for e in cloud.top_k[: opened.options.top_k])
        return InferenceResult(
            label=cloud.label,
            top_k=top,
            label_name=cloud.label_name,
            timings_us=(
                ("open", _us(opened_ns - start)),
                ("decode", _us(decoded_ns - opened_ns)),
                ("queue", item.queue_us),
                ("perturb", item.perturb_us),
                ("encode", item.encode_us),
                ("cloud", item.cloud_us),
                *item.cloud_timings,
                ("total", _us(end - start)),
            ),
            sizes=item.sizes,  # sealed only if the request asked (seal_response drops it)
        )

    async def _process_batch(self, items: Sequence[_Item]) -> list[_ItemResult | BaseException]:
        """Perturb, encode and send one batch. A batch refused only for its size (G3) is
        split in halves, re-encoded and sent again, so that one image whose bit-string
        is too large (a noise image, say) fails alone instead of taking its batch with it.
        """
        started = time.perf_counter_ns()
        images = np.stack([item.image for item in items])
        loop = asyncio.get_running_loop()
        encoded = await loop.run_in_executor(self._executor, self.engine.run, images)
        sent = time.perf_counter_ns()
        try:
            answer = await self.guard.classify(
                self.engine.codec_id, encoded.strings, encoded.count, batch_form=encoded.batch_form
            )
        except EgressDeniedError as exc:
            if not exc.size_only or len(items) == 1:
                return [exc] * len(items)
            middle = len(items) // 2
            return [
                *await self._process_batch(items[:middle]),
                *await self._process_batch(items[middle:]),
            ]
        except UpstreamError as exc:
            return [exc] * len(items)
        cloud_us = _us(time.perf_counter_ns() - sent)
        # What the guard sent: it POSTs exactly these strings or refuses the batch.
        batch_bytes = sum(len(s) for s in encoded.strings)
        cloud_timings = tuple(
            (f"cloud_{name}", int(answer.timings_us[name]))
            for name in _CLOUD_TIMINGS
            if name in answer.timings_us
        )
        return [
            _ItemResult(
                result=answer.results[index],
                queue_us=_us(started - item.submitted_ns),
                perturb_us=encoded.perturb_us,
                encode_us=encoded.encode_us,
                cloud_us=cloud_us,
                batch_size=len(items),
                sizes=BitstringSizes(
                    batch_images=encoded.count,
                    batch_bitstring_bytes=batch_bytes,
                    bitstring_bytes=None if encoded.batch_form else len(encoded.strings[index]),
                ),
                cloud_timings=cloud_timings,
            )
            for index, item in enumerate(items)
        ]

    # -- status --------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Liveness and readiness facts (``GET /healthz``)."""
        now = self.config.clock()
        valid = self.token_valid(now)
        return {
            "status": "ok" if valid else "degraded",
            "ready": valid,
            "key_id": self.key_pair.key_id.hex,
            "token_expires_at": int(self._attestation.expires_at.timestamp()),
            "token_valid": valid,
            "refreshes": self.refreshes,
            "last_refresh_error": self.last_refresh_error,
            "codec": self.engine.codec_id,
            "bundle_digest": self.bundle_digest,
            "queued": self.batcher.queued,
            "batches": self.batcher.stats.batches,
            "images": self.batcher.stats.items,
            "outcomes": dict(self.outcomes),
            "egress": {
                "batches_sent": self.guard.stats.batches_sent,
                "images_sent": self.guard.stats.images_sent,
                "bytes_sent": self.guard.stats.bytes_sent,
                "refused": self.guard.stats.refused,
                "upstream_failures": self.guard.stats.upstream_failures,
            },
        }
