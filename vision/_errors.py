"""Errors of the vision package: one root, one subclass per concern."""

from __future__ import annotations

__all__ = ["BundleError", "CodecError", "VisionError"]


class VisionError(Exception):
    """Root of every error the vision package raises on purpose."""


class CodecError(VisionError):
    """A neural bit-string is malformed, inconsistent or cannot be produced."""


class BundleError(VisionError):
    """A model bundle is missing, tampered with, or does not match its manifest."""
