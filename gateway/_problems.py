"""RFC 7807 problem documents of the gateway (docs/gateway_api.md 3)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

__all__ = ["PROBLEM_MEDIA_TYPE", "PROBLEM_TYPE_PREFIX", "problem", "problem_body", "response"]

PROBLEM_TYPE_PREFIX = "urn:pmc2:gateway:"
PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_body(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem document with type ``urn:pmc2:gateway:<code>``."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")


def response(body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    """A response carrying ``body`` (a problem document) with its status."""
    return Response(
        encode(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A gateway problem response."""
    return response(problem_body(status, code, title, detail, **extra), headers)
