"""The policies package's exception hierarchy.

``PolicyError`` is the root. ``PolicyParseError`` is raised for a document that is not
well-formed TOML or does not match its schema; its ``key_path`` names the offending key
(``egress.max_bytes_per_image``, ``appraisal.reference_values[1].measurement``), or is
the document name alone when the fault is not at one key (TOML syntax, wrong schema).
"""

from __future__ import annotations

__all__ = ["PolicyError", "PolicyParseError"]


class PolicyError(Exception):
    """Root of every error raised by the ``policies`` package."""


class PolicyParseError(PolicyError):
    """A policy document was rejected; ``key_path`` names the offending key."""

    def __init__(self, key_path: str, detail: str) -> None:
        self.key_path = key_path
        self.detail = detail
        super().__init__(f"{key_path}: {detail}")
