"""The guest-side report provider interface.

A *report provider* is whatever lets code running inside a confidential guest obtain a
signed SEV-SNP attestation report over 64 bytes of its own data:

- :class:`attestation.ConfigfsTsmProvider` (Linux configfs-tsm, the preferred interface),
- :class:`attestation.SevGuestDeviceProvider` (the ``/dev/sev-guest`` ioctls),
- the simulated platform (development and CI), which implements this same protocol.

Contract for every implementation (the simulated platform included):

1. ``get_report(report_data, vmpl)`` takes exactly 64 bytes of REPORT_DATA (call
   :func:`check_report_request` first: it raises :class:`MalformedError` otherwise) and a
   VMPL in 0..3, and returns a :class:`GuestReport`.
2. ``GuestReport.report`` is the raw attestation report exactly as the firmware produced it
   (0x4A0 bytes for the report versions we know; providers do not parse or verify it,
   that is the verifier's job, :mod:`attestation._abi` / ``_verify``).
3. ``GuestReport.certs`` is the host-supplied certificate table
   (:class:`attestation.CertTable`; empty when the host supplied none). The simulated
   platform should put its VCEK (or VLEK) and, optionally, ASK/ARK there, serialized
   with ``CertTable.to_bytes()`` semantics (RFC 4122 GUID byte order).
4. ``GuestReport.provider`` names the source: ``"configfs-tsm"``, ``"sev-guest"`` or
   ``"simulated"``.
5. Platform failures raise :class:`ProviderError` (with the kernel/firmware reason);
   never return a partial result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from attestation._certtable import CertTable
from attestation._errors import MalformedError

__all__ = ["REPORT_DATA_SIZE", "GuestReport", "ReportProvider", "check_report_request"]

REPORT_DATA_SIZE = 64
MAX_VMPL = 3


@dataclass(frozen=True, slots=True)
class GuestReport:
    """A raw report plus the certificates the host attached to it."""

    report: bytes
    certs: CertTable = field(default_factory=CertTable)
    provider: str = "unknown"

    def __post_init__(self) -> None:
        if not self.report:
            raise MalformedError("GuestReport: empty report")


@runtime_checkable
class ReportProvider(Protocol):
    """Obtains SEV-SNP attestation reports for the guest it runs in."""

    def get_report(self, report_data: bytes, vmpl: int = 0) -> GuestReport:
        """A fresh report whose REPORT_DATA is ``report_data`` (64 bytes) at ``vmpl``."""
        ...


def check_report_request(report_data: bytes, vmpl: int) -> None:
    """Validate the arguments of :meth:`ReportProvider.get_report`."""
    if len(report_data) != REPORT_DATA_SIZE:
        raise MalformedError(
            f"REPORT_DATA must be exactly {REPORT_DATA_SIZE} bytes, got {len(report_data)}"
        )
    if not 0 <= vmpl <= MAX_VMPL:
        raise MalformedError(f"VMPL must be 0..{MAX_VMPL}, got {vmpl}")
