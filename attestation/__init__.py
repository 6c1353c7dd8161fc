"""PMC2 attestation: SEV-SNP evidence and the attestation service."""

from attestation._abi import (
    REPORT_SIZE,
    SIGNED_SIZE,
    AttestationReport,
    GuestPolicy,
    PlatformInfo,
    SigningKey,
    product_from_cpuid,
)
from attestation._certtable import ARK_GUID, ASK_GUID, VCEK_GUID, VLEK_GUID, CertTable
from attestation._provider import GuestReport, ReportProvider

__all__: list[str] = [
    "ARK_GUID",
    "ASK_GUID",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "VCEK_GUID",
    "VLEK_GUID",
    "AttestationReport",
    "CertTable",
    "GuestPolicy",
    "GuestReport",
    "PlatformInfo",
    "ReportProvider",
    "SigningKey",
    "product_from_cpuid",
]
