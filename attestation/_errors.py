"""The attestation package's exception hierarchy.

``AttestationError`` is the root. Trust failures (the evidence is not what it claims,
or does not satisfy the appraisal policy) and transport failures (a service could not be
reached) are distinct classes so callers and the CLI can tell them apart.
"""

from __future__ import annotations

__all__ = [
    "AppraisalError",
    "AttestationError",
    "FetchError",
    "MalformedError",
    "ProviderError",
    "RateLimitedError",
    "VerificationError",
]


class AttestationError(Exception):
    """Root of every error raised by the ``attestation`` package."""


class MalformedError(AttestationError):
    """Input could not be parsed: wrong size, unknown version, reserved bits set, bad DER."""


class VerificationError(AttestationError):
    """The evidence is not authentic: broken chain, bad signature, mismatched certificate."""


class AppraisalError(AttestationError):
    """Authentic evidence whose fields fail the appraisal options; lists every failure."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = list(failures)
        super().__init__("appraisal failed: " + "; ".join(self.failures))


class FetchError(AttestationError):
    """A transport failure talking to a remote service (e.g. AMD's KDS)."""


class RateLimitedError(FetchError):
    """The remote service answered 429; ``retry_after`` is in seconds when it said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ProviderError(AttestationError):
    """The guest could not obtain a report from its platform (configfs-tsm, /dev/sev-guest)."""
