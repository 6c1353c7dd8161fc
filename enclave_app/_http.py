"""The enclave replica's internal HTTP API (starlette), as docs/gateway_api.md section 4
specifies it for the gateway.

Endpoints (errors are RFC 7807 problem documents, ``application/problem+json``)::

    GET  /healthz                  200 {"status": "ok", "ready": true, ...}
                                   (503 with the same document when not ready:
                                   the attestation token expired)
    GET  /internal/attestation     200 exactly {"key_id", "token", "public_key_jwk"}
                                   (503 token-expired with Retry-After)
    GET  /internal/evidence?nonce=<canonical unpadded b64url, 16..64 bytes>
                                   200 {"key_id", "nonce" (echoed), "public_key_jwk",
                                        "evidence": {"report", "cert_table"}}
                                   ``evidence`` is exactly the ``evidence`` member of the
                                   attestation service's ``/v1/verify``; the report's
                                   REPORT_DATA = runtime_data_hash(nonce, current key).
                                   400 bad-nonce; 429 rate-limited (each call costs a
                                   guest report); 503 evidence-unavailable (the platform
                                   failed or was too slow), both with Retry-After
    POST /internal/infer           body: a sealed request envelope
                                   (application/octet-stream, protocol.md 4)
                                   200 application/octet-stream: the sealed answer
                                   (protocol.md 5), also for failures after opening;
                                   before opening: the SealedError's status and problem
                                   (unknown-key 421 with current_key_id, malformed 400,
                                   oversized 413, ...); 503 overloaded with Retry-After

The body of ``/internal/infer`` is read with the sealed protocol's
``max_envelope_bytes`` as a hard limit (413 beyond it, by Content-Length and while
reading). Nothing learned from a plaintext is ever answered in clear: once an envelope
is open, every outcome is sealed. Tokens, public keys and evidence are public.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from attestation import AttestationError
from enclave_app._batcher import OverloadedError
from enclave_app._boot import boot
from enclave_app._config import EnclaveConfig
from enclave_app._egress import TokenBucket
from enclave_app._enclave import CLIENT_NONCE_SIZES, Enclave, EnclaveNotReadyError
from sealed import SealedError

__all__ = ["PROBLEM_TYPE_PREFIX", "create_app"]

PROBLEM_TYPE_PREFIX = "urn:pmc2:enclave:"
PROBLEM_MEDIA_TYPE = "application/problem+json"
SEALED_MEDIA_TYPE = "application/octet-stream"
RETRY_AFTER_SECONDS = 1
EVIDENCE_TIMEOUT_SECONDS = 10.0
DEFAULT_EVIDENCE_RATE = 20.0
"""Evidence requests per second (burst: one second's worth); each costs a guest report."""


class _ProblemError(Exception):
    def __init__(
        self, status: int, kind: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}


def _problem(
    status: int, kind: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    doc = {"type": PROBLEM_TYPE_PREFIX + kind, "title": title, "status": status, "detail": detail}
    return JSONResponse(doc, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _sealed_problem(exc: SealedError) -> Response:
    doc: dict[str, Any] = exc.to_problem()
    return JSONResponse(doc, status_code=exc.http_status, media_type=PROBLEM_MEDIA_TYPE)


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _ProblemError(400, "bad-request", "invalid Content-Length")
        if int(declared) > limit:
            raise _ProblemError(413, "body-too-large", f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _ProblemError(413, "body-too-large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _b64url(text: str) -> bytes:
    if not text or len(text) > 128 or any(c in "=+/" for c in text):
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not unpadded base64url") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != text:
        raise ValueError("not canonical base64url")
    return data


def _routes(holder: dict[str, Enclave], evidence_rate: float) -> list[Route]:
    evidence_bucket = TokenBucket(evidence_rate, max(1.0, evidence_rate))

    def enclave() -> Enclave:
        current = holder.get("enclave")
        if current is None:
            raise _ProblemError(503, "not-ready", "the enclave is booting")
        return current

    async def healthz(request: Request) -> Response:
        current = holder.get("enclave")
        if current is None:
            return JSONResponse({"status": "booting", "ready": False}, status_code=503)
        doc = current.health()
        return JSONResponse(doc, status_code=200 if doc["ready"] else 503)

    async def attestation(request: Request) -> Response:
        try:
            doc = enclave().attestation_document()
        except EnclaveNotReadyError as exc:
            raise _ProblemError(
                503, "token-expired", str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from None
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    async def evidence(request: Request) -> Response:
        current = enclave()
        text = request.query_params.get("nonce", "")
        try:
            nonce = _b64url(text)
        except ValueError as exc:
            raise _ProblemError(400, "bad-nonce", f"nonce: {exc}") from None
        low, high = CLIENT_NONCE_SIZES
        if not low <= len(nonce) <= high:
            raise _ProblemError(400, "bad-nonce", f"the nonce must be {low} to {high} bytes")
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if evidence_bucket.try_take(1):
            raise _ProblemError(429, "rate-limited", "too many evidence requests", retry)
        try:
            doc = await asyncio.wait_for(
                asyncio.to_thread(current.evidence, nonce), EVIDENCE_TIMEOUT_SECONDS
            )
        except (AttestationError, TimeoutError) as exc:
            reason = "too slow" if isinstance(exc, TimeoutError) else str(exc)
            raise _ProblemError(
                503, "evidence-unavailable", f"no report from the platform: {reason}", retry
            ) from None
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    async def infer(request: Request) -> Response:
        current = enclave()
        body = await _read_limited(request, current.config.sealed_limits.max_envelope_bytes)
        try:
            sealed = await current.handle(body)
        except SealedError as exc:
            return _sealed_problem(exc)
        except OverloadedError as exc:
            raise _ProblemError(
                503, "overloaded", str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from None
        return Response(sealed, media_type=SEALED_MEDIA_TYPE)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/internal/attestation", attestation, methods=["GET"]),
        Route("/internal/evidence", evidence, methods=["GET"]),
        Route("/internal/infer", infer, methods=["POST"]),
    ]


async def _problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _ProblemError)
    titles = {
        400: "Bad Request",
        413: "Content Too Large",
        429: "Too Many Requests",
        503: "Service Unavailable",
    }
    return _problem(exc.status, exc.kind, titles.get(exc.status, "Error"), exc.detail, exc.headers)


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: "not-found", 405: "method-not-allowed"}
    return _problem(
        exc.status_code,
        kinds.get(exc.status_code, "http-error"),
        str(exc.detail),
        str(exc.detail),
        dict(exc.headers or {}),
    )


async def _error_handler(request: Request, exc: Exception) -> Response:
    return _problem(500, "internal", "Internal Server Error", "internal error")


def create_app(
    config: EnclaveConfig | Enclave, *, evidence_rate: float = DEFAULT_EVIDENCE_RATE
) -> Starlette:
    """The replica's ASGI app.

    Given an :class:`Enclave` (booted), the lifespan starts it (batching, token refresh)
    and closes it at shutdown. Given an :class:`EnclaveConfig`, the lifespan first boots
    (``boot``, on a worker thread): a :class:`~enclave_app.BootError` aborts the startup,
    so nothing is served, and says which step failed and why. ``app.state.enclave``
    holds the running enclave (``None`` until booted).
    """
    holder: dict[str, Enclave] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if isinstance(config, Enclave):
            running = config
        else:
            running = Enclave(await asyncio.to_thread(boot, config))
        await running.start()
        holder["enclave"] = running
        app.state.enclave = running
        try:
            yield
        finally:
            holder.pop("enclave", None)
            await running.aclose()

    app = Starlette(
        routes=_routes(holder, evidence_rate),
        exception_handlers={
            _ProblemError: _problem_handler,
            HTTPException: _http_handler,
            Exception: _error_handler,
        },
        lifespan=lifespan,
    )
    app.state.enclave = None
    if isinstance(config, Enclave):
        # usable without a lifespan (e.g. httpx.ASGITransport): the caller starts it
        holder["enclave"] = config
        app.state.enclave = config
    return app
