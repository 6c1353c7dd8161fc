"""Pure ASGI middleware of the gateway: access log + metrics, timeouts, body limits.

Order (outermost first): :class:`AccessLogMiddleware` (request id, one structured log
line and the metrics for every request, whatever happened inside), then
:class:`TimeoutMiddleware` (504 when the whole request takes too long), then
:class:`BodyLimitMiddleware` (413 on a too-large Content-Length before the app runs,
or as soon as the streamed body passes the limit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway._problems import PROBLEM_MEDIA_TYPE, encode, problem_body

__all__ = [
    "ACCESS_LOGGER",
    "AccessLogMiddleware",
    "BodyLimitMiddleware",
    "TimeoutMiddleware",
]

ACCESS_LOGGER = "pmc2.gateway.access"

ProblemFactory = Callable[[str, int], dict[str, Any]]
"""``factory(path, limit)`` returns the 413 problem document for that route."""


async def _send_problem(send: Send, body: Mapping[str, Any], headers: Mapping[str, str]) -> None:
    data = encode(body)
    raw = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(data)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": int(body["status"]), "headers": raw})
    await send({"type": "http.response.body", "body": data})


class _BodyTooLargeError(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse request bodies over the route's limit (``limits[path]`` or ``default``).

    1. A Content-Length that is not a decimal integer: 400; over the limit: 413, and
       the app is not called. 2. Otherwise the body is counted as the app reads it; the
       read that passes the limit raises inside the app, and the middleware answers 413
       (if the app had not started its answer; otherwise the connection is dropped).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Mapping[str, int],
        default: int,
        too_large: ProblemFactory,
    ) -> None:
        self.app = app
        self.limits = dict(limits)
        self.default = default
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.limits.get(path, self.default)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit() or len(value) > 19:
                    body = problem_body(
                        400, "malformed-request", "malformed request", "bad Content-Length"
                    )
                    await _send_problem(send, body, {})
                    return
                if int(value) > limit:
                    await _send_problem(send, self.too_large(path, limit), {})
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLargeError:
            if not started:
                await _send_problem(send, self.too_large(path, limit), {})


class TimeoutMiddleware:
    """Answer 504 when the app has not answered within ``timeout_s`` seconds."""

    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s):
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if started:
                return  # the answer is under way; the server closes the connection
            body = problem_body(
                504,
                "timeout",
                "gateway timeout",
                f"the request did not complete within {self.timeout_s} s",
            )
            await _send_problem(send, body, {})


Observer = Callable[[str, int, float], None]
"""``observe(route, status, seconds)``: the metrics hook of :class:`AccessLogMiddleware`."""


class AccessLogMiddleware:
    """Give every request an id (``X-Request-Id``), log one JSON line per request on
    the ``pmc2.gateway.access`` logger, and report route, status and duration.

    Logged: time, request id, client address, method, path (no query string), route,
    status, duration, bytes in and out. Never bodies or other headers.
    """

    def __init__(self, app: ASGIApp, *, routes: frozenset[str], observe: Observer) -> None:
        self.app = app
        self.routes = routes
        self.observe = observe
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        bytes_in = bytes_out = 0

        async def counting_receive() -> Message:
            nonlocal bytes_in
            message = await receive()
            if message["type"] == "http.request":
                bytes_in += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        path = scope.get("path", "")
        route = path if path in self.routes else "other"
        try:
            await self.app(scope, counting_receive, tagging_send)
        finally:
            elapsed = time.perf_counter() - started
            self.observe(route, status, elapsed)
            client = scope.get("client")
            self.logger.info(
                json.dumps(
                    {
                        "event": "access",
                        "time": round(time.time(), 3),
                        "request_id": request_id,
                        "client": client[0] if client else None,
                        "method": scope.get("method"),
                        "path": path if route != "other" else path[:128],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1e3, 3),
                        "bytes_in": bytes_in,
                        "bytes_out": bytes_out,
                    },
                    sort_keys=True,
                    ensure_ascii=True,
                )
            )
