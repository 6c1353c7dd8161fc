"""Pure ASGI middleware of the attestation service: body limit, timeout, access log.

Order (outermost first): :class:`AccessLogMiddleware` (one structured line per request:
method, path, status, bytes, duration, client; never headers, query strings or bodies,
so no token or secret reaches the log), :class:`TimeoutMiddleware` (a request that has
not started answering within the limit gets ``503 request-timeout``, with Retry-After),
:class:`BodyLimitMiddleware` (reads the whole body up front, at most the limit:
``413 body-too-large`` from Content-Length or from the bytes actually received, and
``400`` for a malformed Content-Length; the application then sees the buffered body).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from attestation._service._problems import PROBLEM_MEDIA_TYPE, problem_bytes

__all__ = ["AccessLogMiddleware", "BodyLimitMiddleware", "TimeoutMiddleware", "send_problem"]

access_logger = logging.getLogger("pmc2.attestation.access")


async def send_problem(
    send: Send,
    status: int,
    kind: str,
    detail: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = problem_bytes(status, kind, detail)
    raw_headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Buffer request bodies of at most ``limit`` bytes; refuse larger ones with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if declared is not None or not value.isdigit() or len(value) > 18:
                    await send_problem(
                        send, 400, "malformed-request", "malformed Content-Length header"
                    )
                    return
                declared = int(value)
        if declared is not None and declared > self.limit:
            await send_problem(
                send, 413, "body-too-large", f"request body larger than {self.limit} bytes"
            )
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if message["type"] != "http.request":
                continue
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await send_problem(
                    send, 413, "body-too-large", f"request body larger than {self.limit} bytes"
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class TimeoutMiddleware:
    """Answer ``503 request-timeout`` when the app has not responded within ``seconds``."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

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

        with anyio.move_on_after(self.seconds) as scope_cancel:
            await self.app(scope, receive, tracking_send)
        if scope_cancel.cancelled_caught and not started:
            await send_problem(
                send,
                503,
                "request-timeout",
                f"the request did not complete within {self.seconds:g} s",
                [(b"retry-after", b"1")],
            )


def _safe(text: str, limit: int = 200) -> str:
    """Printable, space-free and bounded (no log-line injection through the path)."""
    out = "".join(c if c.isprintable() and c != " " else f"%{ord(c):02X}" for c in text)
    return out if len(out) <= limit else out[:limit] + "..."


class AccessLogMiddleware:
    """One structured log line per request (no headers, query strings or bodies)."""

    def __init__(self, app: ASGIApp, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        sent = 0

        async def logging_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            client: Any = scope.get("client")
            fields = {
                "method": scope.get("method", ""),
                "path": _safe(str(scope.get("path", ""))),
                "status": status,
                "bytes": sent,
                "ms": round((time.perf_counter() - start) * 1000.0, 2),
                "client": f"{client[0]}:{client[1]}" if client else "-",
            }
            access_logger.info(
                " ".join(f"{k}={v}" for k, v in fields.items()), extra={"access": fields}
            )
