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
from attestation._errors import (
    AppraisalError,
    AttestationError,
    FetchError,
    MalformedError,
    ProviderError,
    RateLimitedError,
    VerificationError,
)
from attestation._kds import KDS_BASE_URL, AmdChain, KdsClient, RetryPolicy, kds_hwid, vcek_path
from attestation._measure import (
    FileDigest,
    LaunchArtifacts,
    VmmType,
    firmware_info,
    launch_measurement,
)
from attestation._provider import GuestReport, ReportProvider
from attestation._sevguest import SevGuestDeviceProvider
from attestation._sim import SimulatedPlatform, SimulatedProvider
from attestation._tsm import ConfigfsTsmProvider
from attestation._types import OID, Product, TcbVersion
from attestation._verify import VerifiedReport, verify_report

__all__: list[str] = [
    "AMD_ARK_SPKI_SHA256",
    "ARK_GUID",
    "ASK_GUID",
    "KDS_BASE_URL",
    "OID",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "VCEK_GUID",
    "VLEK_GUID",
    "AmdChain",
    "AppraisalError",
    "AppraisalOptions",
    "AttestationError",
    "AttestationReport",
    "CertTable",
    "ConfigfsTsmProvider",
    "EndorsementExtensions",
    "FetchError",
    "FileDigest",
    "GuestPolicy",
    "GuestReport",
    "KdsClient",
    "KeyKind",
    "LaunchArtifacts",
    "MalformedError",
    "MinimumTcb",
    "PlatformInfo",
    "Product",
    "ProviderError",
    "RateLimitedError",
    "ReportProvider",
    "RetryPolicy",
    "SevGuestDeviceProvider",
    "SigningKey",
    "SimulatedPlatform",
    "SimulatedProvider",
    "TcbVersion",
    "TrustedRoots",
    "VerificationError",
    "VerifiedChain",
    "VerifiedReport",
    "VmmType",
    "appraise",
    "appraise_or_raise",
    "firmware_info",
    "kds_hwid",
    "launch_measurement",
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
