"""Strict reading of parsed TOML (or JSON) tables into typed values.

Every table is opened with the set of keys it may hold; any other key is rejected at once.
Each accessor checks the TOML type of one value (a boolean is never an integer) and its
range or pattern, and names the offending key path in the ``PolicyParseError`` it raises.
"""

from __future__ import annotations

import datetime as _dt
import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from policies._errors import PolicyParseError

__all__ = ["Table", "load_toml", "parse_hex", "parse_label", "toml_type_name"]


def toml_type_name(value: object) -> str:
    """The TOML name of a parsed value's type (``null`` for JSON's null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, _dt.datetime):
        return "datetime"
    if isinstance(value, _dt.date):
        return "date"
    if isinstance(value, _dt.time):
        return "time"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


def load_toml(text: str | bytes, document: str) -> dict[str, Any]:
    """Parse TOML text; syntax errors become ``PolicyParseError`` at the document root."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyParseError(document, f"not UTF-8: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyParseError(document, f"invalid TOML: {exc}") from None


class Table:
    """One table of a document, with its key path and the keys it may hold."""

    __slots__ = ("_data", "path")

    def __init__(self, data: object, path: str, allowed: Iterable[str]) -> None:
        if not isinstance(data, Mapping):
            raise PolicyParseError(path, f"expected table, got {toml_type_name(data)}")
        allowed_set = frozenset(allowed)
        for key in data:
            if key not in allowed_set:
                raise PolicyParseError(self._join(path, str(key)), "unknown key")
        self._data: Mapping[str, Any] = data
        self.path = path

    @staticmethod
    def _join(path: str, key: str) -> str:
        if re.fullmatch(r"[A-Za-z0-9_-]+", key):
            return f"{path}.{key}"
        return f"{path}.{key!r}"

    def key_path(self, key: str) -> str:
        """The dotted path of ``key`` in this table."""
        return self._join(self.path, key)

    def error(self, key: str, detail: str) -> PolicyParseError:
        """An error naming ``key`` of this table."""
        return PolicyParseError(self.key_path(key), detail)

    def has(self, key: str) -> bool:
        """Whether ``key`` is present."""
        return key in self._data

    def _typed(self, key: str, kind: type, name: str, required: bool) -> Any:
        if key not in self._data:
            if required:
                raise self.error(key, "missing required key")
            return None
        value = self._data[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise self.error(key, f"expected {name}, got {toml_type_name(value)}")
        return value

    # -- scalars -------------------------------------------------------------------------

    def string(self, key: str) -> str:
        """A required string value."""
        value: str = self._typed(key, str, "string", True)
        return value

    def opt_string(self, key: str) -> str | None:
        """An optional string value (``None`` when absent)."""
        value: str | None = self._typed(key, str, "string", False)
        return value

    def integer(self, key: str, *, minimum: int, maximum: int) -> int:
        """A required integer in ``minimum .. maximum``."""
        value = self.opt_integer(key, minimum=minimum, maximum=maximum, required=True)
        assert value is not None
        return value

    def opt_integer(
        self, key: str, *, minimum: int, maximum: int, required: bool = False
    ) -> int | None:
        """An optional integer in ``minimum .. maximum`` (``None`` when absent)."""
        value: int | None = self._typed(key, int, "integer", required)
        if value is not None and not minimum <= value <= maximum:
            raise self.error(key, f"{value} outside {minimum} .. {maximum}")
        return value

    def boolean(self, key: str, *, default: bool) -> bool:
        """A boolean, ``default`` when absent."""
        value: bool | None = self._typed(key, bool, "boolean", False)
        return default if value is None else value

    # -- containers ----------------------------------------------------------------------

    def table(self, key: str, allowed: Iterable[str], *, required: bool = True) -> Table | None:
        """A sub-table (``None`` when absent and not required)."""
        if key not in self._data:
            if required:
                raise self.error(key, "missing required key")
            return None
        return Table(self._data[key], self.key_path(key), allowed)

    def tables(self, key: str, allowed: Iterable[str], *, required: bool = True) -> list[Table]:
        """An array of tables (an empty list when absent and not required)."""
        items: list[Any] | None = self._typed(key, list, "array of tables", required)
        if items is None:
            return []
        allowed = tuple(allowed)
        return [Table(item, f"{self.key_path(key)}[{i}]", allowed) for i, item in enumerate(items)]

    def strings(self, key: str, *, required: bool = True) -> list[tuple[str, str]] | None:
        """An array of strings as ``(key path, value)`` pairs, so each can be blamed."""
        items: list[Any] | None = self._typed(key, list, "array", required)
        if items is None:
            return None
        out: list[tuple[str, str]] = []
        for index, item in enumerate(items):
            where = f"{self.key_path(key)}[{index}]"
            if not isinstance(item, str):
                raise PolicyParseError(where, f"expected string, got {toml_type_name(item)}")
            out.append((where, item))
        return out


def parse_hex(where: str, text: str, length: int) -> bytes:
    """Exactly ``length`` bytes written as hexadecimal (either case, no prefix)."""
    if not re.fullmatch(r"[0-9A-Fa-f]*", text) or len(text) != 2 * length:
        raise PolicyParseError(where, f"expected {length} bytes as {2 * length} hex digits")
    return bytes.fromhex(text)


_LABEL_MAX = 200


def parse_label(where: str, text: str) -> str:
    """A human label: 1 .. 200 characters, no control characters or lone surrogates."""
    if not 1 <= len(text) <= _LABEL_MAX:
        raise PolicyParseError(where, f"expected 1 .. {_LABEL_MAX} characters")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text):
        raise PolicyParseError(where, "control characters are not allowed")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        raise PolicyParseError(where, "lone surrogates are not allowed")
    return text
