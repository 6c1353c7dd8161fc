"""Errors of the attestation service's client side (tokens, HTTP answers).

They extend the evidence library's hierarchy (``attestation._errors``): a token that
does not verify is a :class:`VerificationError` (a trust failure); a service that cannot be
reached is a :class:`FetchError` (a transport failure); a service that answered with a
refusal is a :class:`ServiceRefusedError`, whose ``trust_failure`` tells the two kinds of
refusal apart (the evidence or credentials were refused, or the request was malformed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attestation._errors import AttestationError, FetchError, VerificationError

__all__ = ["ServiceRefusedError", "ServiceUnavailableError", "TokenError"]


class TokenError(VerificationError):
    """An attestation-result token failed verification (signature, expiry, claims, key)."""


class ServiceUnavailableError(FetchError):
    """The attestation service could not be reached or answered with a server error."""


class ServiceRefusedError(AttestationError):
    """The attestation service answered with an RFC 7807 problem (a 4xx status).

    ``status``, ``type``, ``title``, ``detail`` come from the problem document;
    ``failures`` lists every appraisal failure when the service gave them.
    """

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        self.type = str(problem.get("type", "about:blank"))
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail", ""))
        raw = problem.get("failures")
        self.failures = [str(f) for f in raw] if isinstance(raw, list) else []
        text = f"HTTP {status} {self.title}".rstrip()
        if self.detail:
            text += f": {self.detail}"
        super().__init__(text)

    @property
    def trust_failure(self) -> bool:
        """Whether the service refused on trust grounds (401 or 403)."""
        return self.status in (401, 403)
