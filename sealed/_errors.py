"""The sealed package's exception hierarchy (docs/protocol.md, section 8).

``SealedError`` is the root; every failure to build, parse, open or seal an envelope is
one of its subclasses and nothing else, whatever bytes come in. Each class carries a
stable machine-readable ``code`` (used as the last segment of an RFC 7807 problem type)
and the HTTP status a front door should answer with (``http_status``); the mapping is
a suggestion for the gateway and the enclave app, documented in the specification.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "PROBLEM_TYPE_PREFIX",
    "DecryptionError",
    "MalformedError",
    "OversizedError",
    "SealedError",
    "UnknownKeyError",
    "UnsupportedSuiteError",
    "UnsupportedVersionError",
    "WrongSuiteError",
]


PROBLEM_TYPE_PREFIX = "urn:pmc2:sealed:"


class SealedError(Exception):
    """Root of every error raised by the ``sealed`` package."""

    code: ClassVar[str] = "sealed-error"
    title: ClassVar[str] = "sealed envelope refused"
    http_status: ClassVar[int] = 400

    def to_problem(self) -> dict[str, object]:
        """An RFC 7807 problem document for this error (protocol.md section 8)."""
        return {
            "type": PROBLEM_TYPE_PREFIX + self.code,
            "title": self.title,
            "status": self.http_status,
            "detail": str(self),
        }


class MalformedError(SealedError):
    """The bytes are not a well-formed envelope or payload (bad magic, truncated,
    trailing bytes, inconsistent lengths, bad inner encoding, out-of-range option)."""

    code: ClassVar[str] = "malformed"
    title: ClassVar[str] = "malformed envelope"
    http_status: ClassVar[int] = 400


class OversizedError(SealedError):
    """An envelope or a field is larger than the configured limit (checked before any
    cryptography for the envelope itself)."""

    code: ClassVar[str] = "oversized"
    title: ClassVar[str] = "envelope too large"
    http_status: ClassVar[int] = 413


class UnsupportedVersionError(SealedError):
    """The envelope's version byte names a protocol version this implementation lacks."""

    code: ClassVar[str] = "unsupported-version"
    title: ClassVar[str] = "unsupported envelope version"
    http_status: ClassVar[int] = 400

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(f"unsupported envelope version {version}")


class UnsupportedSuiteError(SealedError):
    """The (KEM, KDF, AEAD) identifiers are not a suite this implementation supports."""

    code: ClassVar[str] = "unsupported-suite"
    title: ClassVar[str] = "unsupported HPKE suite"
    http_status: ClassVar[int] = 400

    def __init__(self, kem_id: int, kdf_id: int, aead_id: int) -> None:
        self.kem_id = kem_id
        self.kdf_id = kdf_id
        self.aead_id = aead_id
        super().__init__(
            f"unsupported HPKE suite kem=0x{kem_id:04x} kdf=0x{kdf_id:04x} aead=0x{aead_id:04x}"
        )


class WrongSuiteError(SealedError):
    """A supported suite, but not the one the addressed key is bound to (or, for a
    response, not the AEAD of the request it answers)."""

    code: ClassVar[str] = "wrong-suite"
    title: ClassVar[str] = "wrong HPKE suite for the key"
    http_status: ClassVar[int] = 400


class UnknownKeyError(SealedError):
    """The envelope is addressed to a key id the recipient does not hold.

    ``current_key_id`` is the recipient's current key id (lowercase hex), so the client
    knows it must fetch a fresh attestation and re-seal; the gateway may also use it.
    """

    code: ClassVar[str] = "unknown-key"
    title: ClassVar[str] = "unknown key id"
    http_status: ClassVar[int] = 421

    def __init__(self, key_id: str, current_key_id: str) -> None:
        self.key_id = key_id
        self.current_key_id = current_key_id
        super().__init__(f"unknown key id {key_id}; the current key id is {current_key_id}")

    def to_problem(self) -> dict[str, object]:
        problem = super().to_problem()
        problem.update(key_id=self.key_id, current_key_id=self.current_key_id)
        return problem


class DecryptionError(SealedError):
    """Authenticated decryption failed: the envelope was tampered with, sealed to another
    key, or bound to another header/request. Deliberately carries no further detail."""

    code: ClassVar[str] = "decryption-failed"
    title: ClassVar[str] = "decryption failed"
    http_status: ClassVar[int] = 400
