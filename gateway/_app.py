"""The gateway HTTP app (starlette): the untrusted front door of the enclave replicas.

Specification: docs/gateway_api.md; OpenAPI 3.1 at ``GET /openapi.json``. The gateway
holds no key. Of a request envelope it reads only the clear-text framing, through
``sealed.peek_request_header`` (version, suite, key id) and its size; it forwards the
bytes unchanged and returns the replica's sealed answer unchanged.

``POST /v1/infer``, in order (refusals are RFC 7807 problem documents, never a 500):

1. the body limit middleware: Content-Length over ``max_envelope_bytes``: 413 before
   anything is read; a streamed body is cut off at the limit (413);
2. the client's identity (API key when configured and presented, else IP); an unknown
   API key: 401; its token bucket: 429 with Retry-After;
3. ``Content-Type: application/octet-stream``: else 415;
4. the envelope framing (``peek_request_header``): the sealed error's own problem
   (400 malformed / unsupported version / unsupported suite, 413 oversized);
5. routing: a replica whose current attestation has the envelope's key id; if none,
   one forced registry refresh (rate-limited), then 421 ``unknown-key`` with the
   current key ids (the client re-attests), or 503 when no replica is attested;
6. back-pressure: the least-loaded replica with a free in-flight slot, else 503 with
   Retry-After;
7. forward to ``POST /internal/infer`` within ``upstream_timeout_s`` (504), the answer
   read up to ``max_response_bytes`` (502 beyond); replica problems pass through
   (a 421 also refreshes the registry), unusable answers are 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway._config import GatewayConfig, RateLimit
from gateway._metrics import CONTENT_TYPE, GatewayMetrics
from gateway._middleware import AccessLogMiddleware, BodyLimitMiddleware, TimeoutMiddleware
from gateway._openapi import openapi_document
from gateway._problems import PROBLEM_MEDIA_TYPE, problem, problem_body, response
from gateway._ratelimit import TokenBuckets
from gateway._registry import Replica, ReplicaError, ReplicaRegistry, read_limited
from sealed import (
    Limits,
    OversizedError,
    SealedError,
    UnknownKeyError,
    peek_request_header,
)

__all__ = ["ROUTES", "create_app"]

ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/attestation"),
    ("POST", "/v1/infer"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
)
"""(method, path) of every public route; the OpenAPI document covers exactly these."""

_OCTET = "application/octet-stream"
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,86}")
_KEY_ID = re.compile(r"[0-9a-f]{32}")
_MAX_PROBLEM_BYTES = 16 * 1024
_PASS_THROUGH = frozenset({400, 404, 413, 415, 422, 429, 503})
_NO_STORE = {"Cache-Control": "no-store"}


class _UpstreamError(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _valid_nonce(text: str) -> bool:
    """Unpadded canonical base64url of 16 to 64 bytes (the attestation service's client
    nonce, docs/gateway_api.md 2.1)."""
    if not _NONCE.fullmatch(text) or len(text) % 4 == 1:
        return False
    import base64

    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return 16 <= len(raw) <= 64 and canonical == text


def _media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _problem_document(data: bytes) -> dict[str, Any] | None:
    """A replica's problem document, if ``data`` is one (a JSON object with a string
    ``type`` and an integer ``status``)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if (
        isinstance(value, dict)
        and isinstance(value.get("type"), str)
        and isinstance(value.get("status"), int)
    ):
        return value
    return None


def create_app(config: GatewayConfig) -> Starlette:
    """Build the gateway app. Replica calls use ``config.transport`` when given."""
    metrics = GatewayMetrics()
    clients: list[httpx.AsyncClient] = []

    def client() -> httpx.AsyncClient:
        if not clients:
            clients.append(
                httpx.AsyncClient(
                    transport=config.transport,
                    timeout=httpx.Timeout(config.upstream_timeout_s),
                    follow_redirects=False,
                    trust_env=False,
                )
            )
        return clients[0]

    def on_refresh(replica: Replica, outcome: str) -> None:
        metrics.refreshes.labels(replica.name, outcome).inc()
        metrics.attested.labels(replica.name).set(1 if replica.attestation else 0)

    registry = ReplicaRegistry(
        config.replicas,
        client=client,
        max_in_flight=config.max_in_flight_per_replica,
        ttl_s=config.attestation_ttl_s,
        min_refresh_interval_s=config.min_refresh_interval_s,
        timeout_s=config.attestation_timeout_s,
        clock=config.clock,
        on_refresh=on_refresh,
    )
    for replica in registry.replicas:
        metrics.in_flight.labels(replica.name).set_function(
            lambda r=replica: r.in_flight  # type: ignore[misc]
        )
        metrics.attested.labels(replica.name).set(0)
    buckets = TokenBuckets(config.clock, config.max_rate_limit_keys)
    sealed_limits = Limits(
        max_envelope_bytes=config.max_envelope_bytes,
        max_response_bytes=config.max_response_bytes,
    )
    retry_after = {"Retry-After": str(config.retry_after_s)}

    def reject(reason: str, status: int, title: str, detail: str, **kw: Any) -> Response:
        metrics.rejections.labels(reason).inc()
        return problem(status, reason, title, detail, **kw)

    # -- client identity and rate limits ----------------------------------------------

    def admit(request: Request) -> Response | None:
        presented = request.headers.get(config.api_key_header)
        limit: RateLimit
        if presented is not None and config.api_keys:
            digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
            known = False
            for accepted in config.api_keys:
                known |= hmac.compare_digest(digest, accepted)
            if not known:
                return reject(
                    "invalid-api-key", 401, "unknown API key", "the API key is not accepted"
                )
            key, limit = "key:" + digest.hex()[:32], config.key_rate_limit
        else:
            host = request.client.host if request.client else "unknown"
            key, limit = "ip:" + host, config.rate_limit
        wait = buckets.take(key, limit)
        if wait > 0:
            seconds = TokenBuckets.retry_after(wait)
            return reject(
                "rate-limited",
                429,
                "too many requests",
                f"rate limit exceeded; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        return None

    # -- replica calls ----------------------------------------------------------------

    async def call(
        replica: Replica,
        method: str,
        path: str,
        *,
        call_name: str,
        limit: int,
        timeout: float,
        request_id: str,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Headers, bytes]:
        headers = {"X-Request-Id": request_id}
        if content is not None:
            headers["Content-Type"] = _OCTET
        started = time.perf_counter()
        kind = None
        try:
            async with asyncio.timeout(timeout):
                async with client().stream(
                    method, replica.url + path, content=content, params=params, headers=headers
                ) as upstream:
                    body = await read_limited(upstream, limit)
                    return upstream.status_code, Headers(raw=upstream.headers.raw), body
        except (TimeoutError, httpx.TimeoutException):
            kind = "timeout"
            raise _UpstreamError(
                "timeout", f"the replica did not answer within {timeout} s"
            ) from None
        except ReplicaError as exc:
            kind = "too-large"
            raise _UpstreamError("bad-answer", str(exc)) from None
        except httpx.HTTPError as exc:
            kind = "unavailable"
            raise _UpstreamError("unavailable", type(exc).__name__) from None
        finally:
            metrics.upstream.labels(replica.name, call_name).observe(time.perf_counter() - started)
            if kind is not None:
                metrics.upstream_errors.labels(replica.name, kind).inc()

    def upstream_failure(exc: _UpstreamError) -> Response:
        if exc.kind == "timeout":
            return reject("upstream-timeout", 504, "upstream timeout", exc.detail)
        return reject("upstream-error", 502, "bad gateway", exc.detail)

    def relay_problem(status: int, headers: Headers, body: bytes) -> Response | None:
        """A replica's problem answer passed through, if it is a usable one."""
        if status not in _PASS_THROUGH or len(body) > _MAX_PROBLEM_BYTES:
            return None
        if _media_type(headers) != PROBLEM_MEDIA_TYPE:
            return None
        document = _problem_document(body)
        if document is None:
            return None
        document["status"] = status
        extra = {}
        retry = headers.get("retry-after", "")
        if status in (429, 503) and retry.isdigit() and len(retry) <= 6:
            extra["Retry-After"] = retry
        return response(document, extra)

    def pick(candidates: list[Replica]) -> Replica | None:
        for replica in sorted(candidates, key=lambda r: (r.in_flight, r.index)):
            if replica.try_acquire():
                return replica
        return None

    def overloaded() -> Response:
        return reject(
            "overloaded",
            503,
            "service overloaded",
            "every replica is at its in-flight limit; retry later",
            headers=retry_after,
        )

    def no_replica() -> Response:
        return reject(
            "no-attested-replica",
            503,
            "no attested replica",
            "no enclave replica currently has a valid attestation; retry later",
            headers=retry_after,
        )

    def unknown_key(key_id: str) -> Response:
        current = registry.key_ids()
        if not current:
            return no_replica()
        metrics.rejections.labels("unknown-key").inc()
        body = UnknownKeyError(key_id, current[0]).to_problem()
        body["current_key_ids"] = current
        return response(body)

    # -- routes -------------------------------------------------------------------------

    async def infer(request: Request) -> Response:
        denied = admit(request)
        if denied is not None:
            return denied
        if _media_type(request.headers) != _OCTET:
            return reject(
                "unsupported-media-type",
                415,
                "unsupported media type",
                f"send the sealed envelope as {_OCTET}",
            )
        envelope = await request.body()
        try:
            header = peek_request_header(envelope, sealed_limits)
        except SealedError as exc:
            metrics.rejections.labels(exc.code).inc()
            return response(exc.to_problem())
        metrics.envelope_bytes.observe(len(envelope))
        key_id = header.key_id.hex
        await registry.ensure_fresh()
        holders = registry.for_key(key_id)
        if not holders:
            await registry.refresh(force=True)
            holders = registry.for_key(key_id)
        if not holders:
            return unknown_key(key_id)
        replica = pick(holders)
        if replica is None:
            return overloaded()
        try:
            status, headers, body = await call(
                replica,
                "POST",
                "/internal/infer",
                call_name="infer",
                limit=config.max_response_bytes,
                timeout=config.upstream_timeout_s,
                request_id=request.state.request_id,
                content=envelope,
            )
        except _UpstreamError as exc:
            if exc.kind == "unavailable":
                registry.invalidate()
            return upstream_failure(exc)
        finally:
            replica.release()
        if status == 200 and _media_type(headers) == _OCTET:
            return Response(body, media_type=_OCTET, headers=_NO_STORE)
        if status == 421:
            await registry.refresh(force=True, urgent=True)
            return unknown_key(key_id)
        relayed = relay_problem(status, headers, body)
        if relayed is not None:
            return relayed
        return reject(
            "upstream-error", 502, "bad gateway", f"the replica answered {status} unexpectedly"
        )

    async def attestation(request: Request) -> Response:
        denied = admit(request)
        if denied is not None:
            return denied
        params = request.query_params
        unknown = sorted(set(params.keys()) - {"nonce", "key_id"})
        if unknown or any(len(params.getlist(name)) > 1 for name in params):
            return reject(
                "malformed-request",
                400,
                "malformed request",
                "the only query parameters are nonce and key_id, each at most once",
            )
        nonce = params.get("nonce")
        key_id = params.get("key_id")
        if nonce is not None and not _valid_nonce(nonce):
            return reject(
                "invalid-nonce",
                400,
                "invalid nonce",
                "nonce must be 16 to 64 bytes as unpadded canonical base64url",
            )
        if key_id is not None and not _KEY_ID.fullmatch(key_id):
            return reject(
                "malformed-request", 400, "malformed request", "key_id is 32 lowercase hex digits"
            )
        await registry.ensure_fresh()
        if nonce is None:
            attested = registry.attested()
            if key_id is not None:
                attested = registry.for_key(key_id)
                if not attested:
                    return unknown_key(key_id)
            if not attested:
                return no_replica()
            seen: dict[str, Any] = {}
            for holder in attested:
                assert holder.attestation is not None
                seen.setdefault(holder.attestation.key_id, holder.attestation.to_json())
            return JSONResponse({"attestations": list(seen.values())}, headers=_NO_STORE)
        candidates = registry.attested() if key_id is None else registry.for_key(key_id)
        if not candidates:
            return no_replica() if key_id is None else unknown_key(key_id)
        replica = pick(candidates)
        if replica is None:
            return overloaded()
        try:
            status, headers, body = await call(
                replica,
                "GET",
                "/internal/evidence",
                call_name="evidence",
                limit=config.max_evidence_bytes,
                timeout=config.attestation_timeout_s,
                request_id=request.state.request_id,
                params={"nonce": nonce},
            )
        except _UpstreamError as exc:
            return upstream_failure(exc)
        finally:
            replica.release()
        if status == 200:
            document = None
            with contextlib.suppress(UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                document = json.loads(body.decode("utf-8"))
            if (
                isinstance(document, dict)
                and document.get("nonce") == nonce
                and isinstance(document.get("key_id"), str)
                and _KEY_ID.fullmatch(document["key_id"])
                and isinstance(document.get("evidence"), dict)
            ):
                return JSONResponse(document, headers=_NO_STORE)
            return reject(
                "upstream-error", 502, "bad gateway", "the replica's evidence is unusable"
            )
        relayed = relay_problem(status, headers, body)
        if relayed is not None:
            return relayed
        return reject(
            "upstream-error", 502, "bad gateway", f"the replica answered {status} unexpectedly"
        )

    async def healthz(request: Request) -> Response:
        await registry.ensure_fresh()
        attested = len(registry.attested())
        status = "ok" if attested else "unavailable"
        return JSONResponse(
            {
                "status": status,
                "replicas": len(registry.replicas),
                "attested": attested,
                "key_ids": registry.key_ids(),
            },
            status_code=200 if attested else 503,
            headers=_NO_STORE,
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    document = openapi_document(config)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(
            exc.status_code,
            code,
            str(exc.detail),
            f"{request.method} {request.url.path[:128]}",
            headers=exc.headers,
        )

    async def internal_error(request: Request, exc: Exception) -> Response:
        return problem(500, "internal", "internal error", "the request could not be completed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def refresher() -> None:
            while True:
                await registry.refresh(force=True)
                await asyncio.sleep(max(config.attestation_ttl_s / 2, 0.5))

        task = asyncio.create_task(refresher())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            while clients:
                await clients.pop().aclose()

    handlers = {
        "/v1/attestation": attestation,
        "/v1/infer": infer,
        "/healthz": healthz,
        "/metrics": metrics_endpoint,
        "/openapi.json": openapi,
    }
    routes = [Route(path, handlers[path], methods=[method]) for method, path in ROUTES]

    def too_large(path: str, limit: int) -> dict[str, Any]:
        metrics.rejections.labels("body-too-large").inc()
        if path == "/v1/infer":
            return OversizedError(f"request envelope exceeds {limit} bytes").to_problem()
        return problem_body(
            413, "body-too-large", "request body too large", f"the body exceeds {limit} bytes"
        )

    def observe(route: str, status: int, seconds: float) -> None:
        metrics.requests.labels(route, str(status)).inc()
        metrics.duration.labels(route).observe(seconds)

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    # added innermost first: the access log wraps the timeout, which wraps the body limit
    app.add_middleware(
        BodyLimitMiddleware,
        limits={"/v1/infer": config.max_envelope_bytes},
        default=config.max_other_body_bytes,
        too_large=too_large,
    )
    app.add_middleware(TimeoutMiddleware, timeout_s=config.request_timeout_s)
    app.add_middleware(
        AccessLogMiddleware, routes=frozenset(path for _, path in ROUTES), observe=observe
    )
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.rate_limits = buckets
    return app
