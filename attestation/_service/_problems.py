"""RFC 7807 problem documents and strict request parsing for the attestation service.

Every error answer is ``application/problem+json`` with ``type`` (a ``urn:pmc2:problem:``
URN naming the kind of problem), ``title``, ``status`` and ``detail``; appraisal refusals
add ``failures`` (every reason) and ``ear_status`` (``"contraindicated"``).

Request bodies are parsed strictly: UTF-8 JSON objects without duplicate keys, NaN or
Infinity, nesting limited to :data:`MAX_DEPTH`; members are checked by :class:`Fields`,
which names the offending member and rejects unknown ones. Malformed input is always a
4xx, never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.responses import JSONResponse

__all__ = [
    "MAX_DEPTH",
    "Fields",
    "ProblemError",
    "parse_json_object",
    "problem_response",
]

PROBLEM_TYPE_PREFIX = "urn:pmc2:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"
MAX_DEPTH = 16

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ProblemError(Exception):
    """An error answered as a problem document (raise it from any handler)."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status = status
        self.kind = kind
        self.title = title or _TITLES.get(status, "Error")
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra
        super().__init__(f"{status} {kind}: {detail}")

    def to_dict(self) -> dict[str, Any]:
        """The problem document."""
        doc: dict[str, Any] = {
            "type": PROBLEM_TYPE_PREFIX + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        doc.update(self.extra)
        return doc


def problem_response(problem: ProblemError) -> JSONResponse:
    """The problem as a starlette response."""
    return JSONResponse(
        problem.to_dict(),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def problem_bytes(status: int, kind: str, detail: str) -> bytes:
    """A serialized problem document (for the pure ASGI middleware)."""
    return json.dumps(ProblemError(status, kind, detail).to_dict()).encode()


# ---------------------------------------------------------------------------- parsing


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of containers (stops counting past ``limit``)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json_object(body: bytes, what: str = "request body") -> dict[str, Any]:
    """A strict JSON object from ``body`` (400 ``malformed-request`` otherwise)."""
    if not body:
        raise ProblemError(400, "malformed-request", f"{what} is empty; expected a JSON object")
    try:
        text = body.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise ProblemError(400, "malformed-request", f"{what} is not UTF-8") from None
    except RecursionError:
        raise ProblemError(400, "malformed-request", f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise ProblemError(400, "malformed-request", f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProblemError(400, "malformed-request", f"{what} must be a JSON object")
    if _depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise ProblemError(400, "malformed-request", f"{what} is nested too deeply")
    return value


class Fields:
    """Typed access to a JSON object's members, naming the member in every error."""

    def __init__(self, data: Mapping[str, Any], where: str, allowed: Iterable[str]) -> None:
        self._data = data
        self._where = where
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise self.error(unknown[0], "unknown member")

    def error(self, key: str, detail: str, status: int = 400) -> ProblemError:
        """A ``malformed-request`` problem naming ``where.key``."""
        return ProblemError(status, "malformed-request", f"{self.path(key)}: {detail}")

    def path(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def has(self, key: str) -> bool:
        return key in self._data

    def _get(self, key: str, required: bool) -> Any:
        if key not in self._data:
            if required:
                raise self.error(key, "missing required member")
            return None
        value = self._data[key]
        if value is None and required:
            raise self.error(key, "must not be null")
        return value

    def string(self, key: str, *, max_length: int = 4096) -> str:
        value = self._get(key, True)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_json_type(value)}")
        if len(value) > max_length:
            raise self.error(key, f"longer than {max_length} characters")
        return value

    def opt_string(self, key: str, *, max_length: int = 4096) -> str | None:
        if self._get(key, False) is None:
            return None
        return self.string(key, max_length=max_length)

    def integer(self, key: str, *, minimum: int, maximum: int) -> int:
        value = self._get(key, True)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_json_type(value)}")
        if not minimum <= value <= maximum:
            raise self.error(key, f"{value} outside {minimum} .. {maximum}")
        return value

    def opt_integer(self, key: str, *, minimum: int, maximum: int) -> int | None:
        if self._get(key, False) is None:
            return None
        return self.integer(key, minimum=minimum, maximum=maximum)

    def obj(self, key: str, allowed: Iterable[str]) -> Fields:
        value = self._get(key, True)
        if not isinstance(value, dict):
            raise self.error(key, f"expected an object, got {_json_type(value)}")
        return Fields(value, self.path(key), allowed)

    def raw_object(self, key: str) -> dict[str, Any]:
        value = self._get(key, True)
        if not isinstance(value, dict):
            raise self.error(key, f"expected an object, got {_json_type(value)}")
        return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
