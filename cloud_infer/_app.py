"""The cloud inference HTTP service (starlette): ``/v1/classify``, ``/healthz``, ``/metrics``.

Specification: docs/cloud_api.md. Handling of ``POST /v1/classify``, in order (each
refusal an RFC 7807 problem document, never a 500 for any input):

1. ``Authorization: Bearer <credential>``: a credential whose SHA-256 is accepted,
   compared in constant time (401 ``unauthorized`` otherwise, before the body is read);
2. ``Content-Type: application/vnd.pmc2.bitstrings`` (415 ``unsupported-media-type``);
3. the body within ``max_body_bytes``, by Content-Length and while reading (413
   ``body-too-large``; a bad Content-Length is 400);
4. the body parses (:meth:`ClassifyRequest.from_bytes`, 400 ``malformed-request``);
5. the engine's precheck: codec id, count, string sizes, bit-string headers, form,
   image size (413/422, see :meth:`InferenceEngine.precheck`);
6. admission: fewer than ``max_pending_images`` pending (503 ``overloaded`` with
   Retry-After);
7. decode and classify in the worker thread (micro-batched), within
   ``request_timeout_s`` (503 ``timeout`` with Retry-After); a string whose payload
   fails to decode is 422 ``invalid-bitstring`` with its index.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_infer._batcher import MicroBatcher, OverloadedError
from cloud_infer._config import CloudConfig
from cloud_infer._engine import InferenceEngine, Outcome, RefusalError
from cloud_infer._metrics import CONTENT_TYPE, CloudMetrics
from cloud_infer._wire import MEDIA_TYPE, ClassifyRequest, ClassifyResponse, WireError

__all__ = ["PROBLEM_TYPE_PREFIX", "create_app"]

PROBLEM_TYPE_PREFIX = "urn:pmc2:cloud:"
_PROBLEM_MEDIA_TYPE = "application/problem+json"
_REALM = 'Bearer realm="pmc2-cloud"'


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """An RFC 7807 problem document response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(
        json.dumps(body, separators=(",", ":"), sort_keys=True),
        status_code=status,
        media_type=_PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


class _BodyTooLargeError(Exception):
    pass


class _BadContentLengthError(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 19:
            raise _BadContentLengthError
        if int(declared) > limit:
            raise _BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


class _RouteMetrics:
    """Pure ASGI middleware counting responses by route template and status code."""

    def __init__(self, app: ASGIApp, metrics: CloudMetrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in self.routes else "other"
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()


def create_app(config: CloudConfig, *, engine: InferenceEngine | None = None) -> Starlette:
    """Build the cloud inference app; loads the bundle now (raises ``ConfigError``).

    ``engine`` replaces the bundle loading (tests, the benchmark); it must have been
    loaded from the same ``config`` (its precheck applies ``config.limits``). The
    micro-batcher's worker thread is stopped when the app's lifespan ends.
    """
    eng = engine if engine is not None else InferenceEngine.load(config)
    limits = config.limits
    metrics = CloudMetrics()
    batcher: MicroBatcher[ClassifyRequest, Outcome] = MicroBatcher(
        eng.run_batch,
        max_batch_images=config.batching.max_batch_images,
        max_wait_s=config.batching.max_wait_s,
        max_pending_images=limits.max_pending_images,
        thread_name="pmc2-cloud-infer",
        on_batch=metrics.batch_images.observe,
    )
    metrics.pending.set_function(lambda: batcher.pending_images)
    retry_after = {"Retry-After": str(limits.retry_after_s)}

    def refuse(status: int, code: str, title: str, detail: str, **kw: Any) -> Response:
        metrics.errors.labels(code).inc()
        return problem(status, code, title, detail, **kw)

    async def classify(request: Request) -> Response:
        started = time.perf_counter()
        token = _bearer(request)
        if token is None:
            return refuse(
                401,
                "unauthorized",
                "authentication required",
                "send the enclave credential as a bearer token",
                headers={"WWW-Authenticate": _REALM},
            )
        if not config.credentials.matches(token):
            return refuse(
                401,
                "unauthorized",
                "authentication failed",
                "the credential is not accepted",
                headers={"WWW-Authenticate": _REALM + ', error="invalid_token"'},
            )
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != MEDIA_TYPE:
            return refuse(
                415,
                "unsupported-media-type",
                "unsupported media type",
                f"send {MEDIA_TYPE}",
            )
        try:
            body = await _read_body(request, limits.max_body_bytes)
        except _BodyTooLargeError:
            return refuse(
                413,
                "body-too-large",
                "request body too large",
                f"the body exceeds {limits.max_body_bytes} bytes",
            )
        except _BadContentLengthError:
            return refuse(400, "malformed-request", "malformed request", "bad Content-Length")
        try:
            parsed = ClassifyRequest.from_bytes(body)
        except WireError as exc:
            return refuse(400, "malformed-request", "malformed request", str(exc))
        try:
            eng.precheck(parsed)
        except RefusalError as refusal:
            return refuse(
                refusal.status, refusal.code, refusal.title, refusal.detail, index=refusal.index
            )
        try:
            outcome, queued = await asyncio.wait_for(
                batcher.submit(parsed, parsed.count), timeout=limits.request_timeout_s
            )
        except OverloadedError as exc:
            return refuse(
                503,
                "overloaded",
                "service overloaded",
                f"too many images pending ({exc}); retry later",
                headers=retry_after,
            )
        except TimeoutError:
            return refuse(
                503,
                "timeout",
                "classification timed out",
                f"no answer within {limits.request_timeout_s} s; retry later",
                headers=retry_after,
            )
        if outcome.refusal is not None:
            r = outcome.refusal
            return refuse(r.status, r.code, r.title, r.detail, index=r.index)
        timings = dict(outcome.timings_us)
        timings["queue"] = max(0, round(queued * 1e6))
        answer = ClassifyResponse(
            codec=eng.codec_id,
            results=outcome.results,
            timings_us=timings,
            bundle_digest=eng.bundle_digest,
            batch_images=outcome.batch_images,
        )
        metrics.images.inc(parsed.count)
        metrics.bytes_per_image.observe(parsed.payload_bytes / parsed.count)
        metrics.latency.observe(time.perf_counter() - started)
        return Response(answer.to_bytes(), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "codec": eng.codec_id,
                "bundle_digest": eng.bundle_digest,
                "classes": eng.num_classes,
                "image_size": list(eng.image_size) if eng.image_size else None,
                "pending_images": batcher.pending_images,
            }
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(
            exc.status_code,
            code,
            str(exc.detail),
            f"{request.method} {request.url.path}",
            headers=exc.headers,
        )

    async def internal_error(request: Request, exc: Exception) -> Response:
        return problem(500, "internal", "internal error", "the request could not be completed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            batcher.close()

    routes = [
        Route("/v1/classify", classify, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    app.add_middleware(_RouteMetrics, metrics=metrics, routes=frozenset(r.path for r in routes))
    app.state.engine = eng
    app.state.batcher = batcher
    app.state.metrics = metrics
    return app
