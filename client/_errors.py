"""The client's exception hierarchy: one root, :class:`ClientError`, and one subclass per
kind of failure, so that a caller (and the ``pmc2 classify`` exit status) can tell a trust
failure from a network failure.

* :class:`AttestationFailed`: the enclave's attestation could not be verified (a token
  whose signature, key set pin, lifetime or binding fails; evidence the attestation
  service refused). Nothing was sent.
* :class:`PolicyMismatch`: the attestation verified, but what it attests is not what
  this client accepts (measurement, launch configuration, egress policy, appraisal
  policy, HPKE suite, platform). Nothing was sent.
* :class:`TransportError`: a server could not be reached, or did not answer in time.
* :class:`ProtocolError`: a server answered something the protocol does not allow
  (garbage, a wrong content type, a sealed answer that does not open).
* :class:`ServerRefused`: a server answered with a well-formed refusal (an RFC 7807
  problem document, or a sealed failure from the enclave such as ``invalid-image``).
* :class:`InvalidImage`: an input could not be turned into a JPEG (the caller's
  mistake; nothing was sent).

Every message says what was expected and what was found.

>>> from client import ClientError, PolicyMismatch
>>> error = PolicyMismatch("measurement", expected=["aa" * 48], found="bb" * 48)
>>> isinstance(error, ClientError), error.what
(True, 'measurement')
>>> str(error)[:46]
'measurement not accepted: expected one of [aaa'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "AttestationFailed",
    "ClientError",
    "InvalidImage",
    "PolicyMismatch",
    "ProtocolError",
    "ServerRefused",
    "TransportError",
]


class ClientError(Exception):
    """Root of every error the client SDK raises."""


class AttestationFailed(ClientError):  # noqa: N818 (names from the issue)
    """The enclave's attestation could not be verified; no image was sent.

    ``reasons`` lists one line per attestation that was tried (a gateway may offer
    several replicas).
    """

    def __init__(self, message: str, reasons: Iterable[str] = ()) -> None:
        self.reasons = tuple(reasons)
        super().__init__(message)


class PolicyMismatch(ClientError):  # noqa: N818
    """The attestation verified but attests something this client does not accept.

    ``what`` names the claim (``measurement``, ``egress policy digest``, ...),
    ``expected`` the accepted values and ``found`` the attested one.
    """

    def __init__(self, what: str, *, expected: Iterable[str], found: str, hint: str = "") -> None:
        self.what = what
        self.expected = tuple(expected)
        self.found = found
        listed = ", ".join(self.expected)
        message = f"{what} not accepted: expected one of [{listed}], the attestation says {found}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class TransportError(ClientError):
    """A server (gateway or attestation service) could not be reached or timed out."""


class ProtocolError(ClientError):
    """A server answered with something the protocol does not allow."""


class ServerRefused(ClientError):  # noqa: N818
    """A server refused the request with a well-formed answer.

    ``status`` is the HTTP status (200 for a sealed failure from the enclave), ``code``
    the problem type's last segment or the sealed failure code (``invalid-image``,
    ``rate-limited``, ``no-attested-replica``, ...), ``detail`` the explanation,
    ``retry_after`` the ``Retry-After`` seconds when the server gave them, and
    ``problem`` the whole problem document.
    """

    def __init__(
        self,
        where: str,
        status: int,
        code: str,
        detail: str,
        *,
        retry_after: int | None = None,
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        self.where = where
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.problem = dict(problem or {})
        message = f"{where} refused (HTTP {status}, {code})"
        if detail:
            message += f": {detail}"
        if retry_after is not None:
            message += f"; retry after {retry_after} s"
        super().__init__(message)


class InvalidImage(ClientError, ValueError):  # noqa: N818
    """An input image could not be read or encoded as JPEG; nothing was sent."""
