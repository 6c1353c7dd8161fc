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
from attestation._appraise import (
    AppraisalOptions,
    MinimumTcb,
    appraise,
    appraise_or_raise,
)
from attestation._certs import (
    AMD_ARK_SPKI_SHA256,
    EndorsementExtensions,
    KeyKind,
    TrustedRoots,
    VerifiedChain,
    load_certificate,
    load_certificates,
    load_crl,
    parse_endorsement_extensions,
    spki_sha256,
    verify_chain,
)
from attestation._certtable import ARK_GUID, ASK_GUID, VCEK_GUID, VLEK_GUID, CertTable
from attestation._kds import KDS_BASE_URL, AmdChain, KdsClient, RetryPolicy, kds_hwid, vcek_path
from attestation._provider import GuestReport, ReportProvider
from attestation._verify import VerifiedReport, verify_report

__all__: list[str] = [
    "AMD_ARK_SPKI_SHA256",
    "ARK_GUID",
    "ASK_GUID",
    "KDS_BASE_URL",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "VCEK_GUID",
    "VLEK_GUID",
    "AmdChain",
    "AppraisalOptions",
    "AttestationReport",
    "CertTable",
    "EndorsementExtensions",
    "GuestPolicy",
    "GuestReport",
    "KdsClient",
    "KeyKind",
    "MinimumTcb",
    "PlatformInfo",
    "ReportProvider",
    "RetryPolicy",
    "SigningKey",
    "TrustedRoots",
    "VerifiedChain",
    "VerifiedReport",
    "appraise",
    "appraise_or_raise",
    "kds_hwid",
    "load_certificate",
    "load_certificates",
    "load_crl",
    "parse_endorsement_extensions",
    "product_from_cpuid",
    "spki_sha256",
    "vcek_path",
    "verify_chain",
    "verify_report",
]
