"""PMC2 attestation: SEV-SNP evidence and the attestation service."""

from attestation._certtable import ARK_GUID, ASK_GUID, VCEK_GUID, VLEK_GUID, CertTable
from attestation._provider import GuestReport, ReportProvider

__all__: list[str] = [
    "ARK_GUID",
    "ASK_GUID",
    "VCEK_GUID",
    "VLEK_GUID",
    "CertTable",
    "GuestReport",
    "ReportProvider",
]
