"""Canonical encoding of policy documents, their digests, and the canonical TOML form.

Canonical encoding (PMC2 policy documents, schema version 1)
=============================================================

A document is first parsed and validated into its typed model; the model then gives a
*canonical value* (``to_dict()``), a JSON value made only of objects with ASCII string
keys, arrays, strings, booleans and integers in ``0 .. 2**53 - 1``. There are no floats
and no nulls: an optional field that is not set is left out of its object (so is the
appraisal policy's ``reference_values`` under ``accept = "registered"``, where it must be
empty). Every other field of the model is present, defaults included, so a document that
omits a defaulted key and one that spells it out have the same encoding. Values are
normalized by the model before encoding: byte strings (measurements, HOST_DATA, digests)
are lowercase hexadecimal; endpoint hosts and URL schemes are lowercase, with the
scheme's default port and a trailing ``/`` left out; arrays keep the document's order
(duplicates are rejected when parsing). Every document has a member ``schema`` naming its
type and version (``pmc2/appraisal/v1``, ``pmc2/key-release/v1``, ``pmc2/egress/v1``,
``pmc2/launch-config/v1``), so encodings of different document types never collide.

The canonical value is serialized as JSON in the manner of RFC 8785 (JSON Canonicalization
Scheme), which for this restricted set of types is exactly:

1. object members sorted by key (keys are ASCII, so code-unit and byte order agree), no
   duplicate keys;
2. no whitespace anywhere outside strings; ``,`` between elements and members, ``:``
   between a key and its value;
3. strings in double quotes; ``"`` and ``\\`` escaped as ``\\"`` and ``\\\\``; the control
   characters U+0008, U+0009, U+000A, U+000C, U+000D as ``\\b \\t \\n \\f \\r``; the other
   characters below U+0020 as ``\\u00xx`` (lowercase hex); every other character written
   as itself;
4. integers in decimal, without sign, leading zeros, fraction or exponent; booleans as
   ``true`` / ``false``;
5. the result encoded as UTF-8 (no byte-order mark).

The canonical encoding depends only on the model, so it is stable across TOML key order,
whitespace, comments, quoting style, inline versus standard tables and hexadecimal case.

Digests: appraisal, key-release and egress policies are identified by SHA-384 of their
canonical encoding (48 bytes). The launch configuration is identified by SHA-256 of its
canonical encoding (32 bytes), which is exactly the size of the SEV-SNP HOST_DATA field,
so the launch-configuration digest *is* the enclave's HOST_DATA (as the Confidential
Containers init-data specification binds its digest into HOST_DATA / MRCONFIGID).

The canonical TOML form (``to_toml()``) writes the same canonical value as TOML: members in
the model's field order, scalars and arrays of scalars first, then sub-tables as
``[name]`` and arrays of tables as ``[[name]]``; strings as basic strings. Parsing it gives
back an equal model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TypeAlias

from policies._errors import PolicyError

__all__ = ["JsonValue", "canonical_json", "dump_toml"]

JsonValue: TypeAlias = "str | int | bool | Sequence[JsonValue] | Mapping[str, JsonValue]"

MAX_INT = 2**53 - 1
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _check(value: JsonValue, where: str) -> None:
    """Reject anything outside the canonical value types (a bug in a model, not input)."""
    if isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not 0 <= value <= MAX_INT:
            raise PolicyError(f"{where}: integer {value} outside 0 .. 2**53-1")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise PolicyError(f"{where}: object key {key!r} is not an ASCII string")
            _check(item, f"{where}.{key}")
        return
    if isinstance(value, Sequence):
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]")
        return
    raise PolicyError(f"{where}: {type(value).__name__} has no canonical encoding")


def canonical_json(value: JsonValue) -> bytes:
    """The canonical encoding defined in this module's docstring."""
    _check(value, "$")
    text = json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return text.encode("utf-8")


# --------------------------------------------------------------------------- TOML writer

_TOML_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _is_table(value: JsonValue) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: JsonValue) -> bool:
    return (
        not isinstance(value, str | Mapping)
        and isinstance(value, Sequence)
        and len(value) > 0
        and all(isinstance(item, Mapping) for item in value)
    )


def _toml_value(value: JsonValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


def _emit(lines: list[str], table: Mapping[str, JsonValue], path: list[str]) -> None:
    for key, value in table.items():
        if not _is_table(value) and not _is_table_array(value):
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in table.items():
        if isinstance(value, Mapping):
            header = ".".join(_toml_key(part) for part in [*path, key])
            lines.extend(["", f"[{header}]"])
            _emit(lines, value, [*path, key])
    for key, value in table.items():
        if _is_table_array(value):
            assert isinstance(value, Sequence)
            header = ".".join(_toml_key(part) for part in [*path, key])
            for item in value:
                assert isinstance(item, Mapping)
                lines.extend(["", f"[[{header}]]"])
                _emit(lines, item, [*path, key])


def dump_toml(document: Mapping[str, JsonValue]) -> str:
    """Write a canonical value as TOML (see the module docstring); ends with a newline."""
    _check(document, "$")
    lines: list[str] = []
    _emit(lines, document, [])
    return "\n".join(lines).lstrip("\n") + "\n"
