"""Canonical JSON for the sealed payloads (docs/protocol.md, section 6.4).

The options and the response body are JSON values of a deliberately small type set:
objects with ASCII keys, arrays, strings of printable ASCII (U+0020..U+007E), and
integers in ``0 .. 2**53 - 1``. No floats, booleans or nulls. Their canonical encoding is
RFC 8785 (JCS) restricted to that set, which is exactly:

1. object members sorted by key, no duplicate keys;
2. no whitespace outside strings; ``,`` between elements/members and ``:`` after keys;
3. strings in double quotes with ``"`` and ``\\`` escaped as ``\\"`` and ``\\\\`` (no
   other character of the set needs escaping);
4. integers in decimal without sign, leading zeros, fraction or exponent;
5. the result is ASCII (hence UTF-8).

A decoder accepts a byte string only when it parses under these types *and* re-encodes
to the very same bytes, so each value has exactly one accepted encoding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import NoReturn, TypeAlias

from sealed._errors import MalformedError

__all__ = ["JsonValue", "canonical_json", "parse_canonical_json"]

JsonValue: TypeAlias = "str | int | Sequence[JsonValue] | Mapping[str, JsonValue]"

MAX_SAFE_INTEGER = 2**53 - 1


def _printable_ascii(text: str) -> bool:
    return all(0x20 <= ord(ch) <= 0x7E for ch in text)


def _check(value: object, where: str) -> None:
    if isinstance(value, bool):
        raise MalformedError(f"{where}: booleans are not allowed")
    if isinstance(value, int):
        if not 0 <= value <= MAX_SAFE_INTEGER:
            raise MalformedError(f"{where}: integer out of range")
    elif isinstance(value, str):
        if not _printable_ascii(value):
            raise MalformedError(f"{where}: strings are printable ASCII")
    elif isinstance(value, Mapping):
        for key, member in value.items():
            if not isinstance(key, str) or not _printable_ascii(key):
                raise MalformedError(f"{where}: keys are printable ASCII strings")
            _check(member, f"{where}.{key}")
    elif isinstance(value, Sequence):
        for index, element in enumerate(value):
            _check(element, f"{where}[{index}]")
    else:
        raise MalformedError(f"{where}: {type(value).__name__} is not allowed")


def canonical_json(value: JsonValue) -> bytes:
    """The canonical encoding of ``value`` (checked against the allowed types)."""
    _check(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedError(f"duplicate JSON member {key!r}")
        result[key] = value
    return result


def _reject_float(text: str) -> NoReturn:
    raise MalformedError("JSON numbers are integers")


def parse_canonical_json(data: bytes) -> object:
    """Parse ``data`` and require it to be the canonical encoding of an allowed value."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedError("canonical JSON is ASCII") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_float=_reject_float,
            parse_constant=_reject_float,
        )
    except MalformedError:
        raise
    except (ValueError, RecursionError):
        # JSONDecodeError is a ValueError; so is an integer beyond the digit limit.
        raise MalformedError("not valid JSON") from None
    _check(value, "$")
    if canonical_json(value) != data:
        raise MalformedError("JSON is not in canonical form")
    return value
