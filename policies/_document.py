"""What every policy document shares: parsing entry points, canonical form and digest."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from policies._canon import JsonValue, canonical_json, dump_toml
from policies._errors import PolicyError, PolicyParseError
from policies._reader import Table, load_toml, toml_type_name

__all__ = ["Document"]


class Document:
    """Base of the four document models (mixed into frozen dataclasses).

    Subclasses set ``KIND`` (the root of key paths in errors), ``SCHEMA`` (the required
    value of the document's ``schema`` key) and ``DIGEST_ALGORITHM``, and implement
    ``_from_table`` and ``to_dict``.
    """

    __slots__ = ()

    KIND: ClassVar[str]
    SCHEMA: ClassVar[str]
    DIGEST_ALGORITHM: ClassVar[str] = "sha384"

    # -- parsing ---------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, text: str | bytes) -> Self:
        """Parse and validate a TOML document (``PolicyParseError`` names the bad key)."""
        return cls.from_dict(load_toml(text, cls.KIND))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Self:
        """Read and parse a TOML file."""
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise PolicyError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
        return cls.from_toml(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Validate an already parsed document (a TOML table or a JSON object)."""
        if not isinstance(data, Mapping):
            raise PolicyParseError(cls.KIND, f"expected table, got {toml_type_name(data)}")
        schema = data.get("schema")
        if schema is None:
            raise PolicyParseError(f"{cls.KIND}.schema", "missing required key")
        if not isinstance(schema, str):
            raise PolicyParseError(
                f"{cls.KIND}.schema", f"expected string, got {toml_type_name(schema)}"
            )
        if schema != cls.SCHEMA:
            raise PolicyParseError(f"{cls.KIND}.schema", f"expected {cls.SCHEMA!r}, got {schema!r}")
        return cls._from_table(data)

    @classmethod
    def _from_table(cls, data: Mapping[str, Any]) -> Self:
        raise NotImplementedError

    @staticmethod
    def _open(data: Mapping[str, Any], kind: str, keys: tuple[str, ...]) -> Table:
        return Table(data, kind, ("schema", *keys))

    # -- canonical form --------------------------------------------------------------------

    def to_dict(self) -> dict[str, JsonValue]:
        """The canonical value (see ``policies._canon``), ``schema`` first."""
        raise NotImplementedError

    def canonical_json(self) -> bytes:
        """The canonical encoding: the bytes the digest is taken over."""
        return canonical_json(self.to_dict())

    def digest(self) -> bytes:
        """The document's digest (``DIGEST_ALGORITHM`` of the canonical encoding)."""
        return hashlib.new(self.DIGEST_ALGORITHM, self.canonical_json()).digest()

    def digest_hex(self) -> str:
        """The digest in lowercase hexadecimal."""
        return self.digest().hex()

    def to_toml(self) -> str:
        """The canonical TOML form; ``from_toml`` of it gives back an equal document."""
        return dump_toml(self.to_dict())
