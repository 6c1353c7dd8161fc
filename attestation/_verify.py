"""Authenticity of an SEV-SNP attestation report: chain, extensions, signature.

This module answers one question: *did an AMD secure processor, endorsed by a trusted
ARK, sign exactly these report bytes?* Whether the report's contents are acceptable is
appraisal (``attestation._appraise``), kept separate.

Checklist of :func:`verify_report` (ABI = SEV-SNP Firmware ABI spec, AMD pub. 56860;
KDS = VCEK Certificate and KDS Interface spec, AMD pub. 57230):

V1. Parse the endorsement certificate (DER/PEM) and the chain; parse the report
    (ABI 7.3, Table 23): exact size 0x4A0, supported VERSION (2, 3, 5), every
    must-be-zero range zero, SIGNATURE_ALGO = 1 (ECDSA P-384 with SHA-384, ABI
    Table 141). A version-2 report takes its product from the caller or, failing that,
    from the certificate's productName (KDS, "VCEK Certificate Extensions"); v3+
    reports name it in CPUID_FAM_ID/CPUID_MOD_ID.
V2. Product agreement: the report's product, the certificate's productName and the
    caller's expected product (if any) are the same.
V3. Root pin and chain, link by link (``attestation._certs`` C1-C6: names, key types,
    RSASSA-PSS SHA-384 salt 48 signatures, validity at the reference time, optional
    CRL; KDS section 2).
V4. SIGNING_KEY (report 0x48 bits 4:2, ABI Table 23) names the kind of certificate
    supplied: 0 = VCEK, 1 = VLEK; 7 (no key) is never authentic.
V5. Certificate extensions against the report (KDS "VCEK Certificate Extensions"):
    blSPL, teeSPL, snpSPL, ucodeSPL (and fmcSPL on Turin) equal REPORTED_TCB; a VCEK's
    hwID equals CHIP_ID (Milan/Genoa: all 64 bytes; Turin: hwID is the first 8 bytes
    and the remaining 56 bytes of CHIP_ID are zero), unless MASK_CHIP_KEY is set (then
    CHIP_ID is zero and the signature alone binds the chip).
V6. Signature (ABI 7.3 and Table 141): R and S are the little-endian 72-byte integers
    at 0x2A0 and 0x2E8; ECDSA P-384 with SHA-384 over bytes 0x000-0x29F, verified with
    the leaf's public key.

The reference time ``at`` is an explicit input; nothing here reads the clock or the
network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation._abi import SIGNED_SIZE, AttestationReport, SigningKey
from attestation._certs import (
    KeyKind,
    TrustedRoots,
    VerifiedChain,
    load_certificate,
    load_certificates,
    parse_endorsement_extensions,
    verify_chain,
)
from attestation._errors import VerificationError
from attestation._types import Product

__all__ = ["VerifiedReport", "check_extensions", "verify_report", "verify_signature"]

_P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
    "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16,
)
_TURIN_HWID = 8


@dataclass(frozen=True)
class VerifiedReport:
    """An authentic report: the decoded report plus the chain that endorses it."""

    report: AttestationReport
    raw: bytes
    chain: VerifiedChain
    at: datetime

    @property
    def product(self) -> Product:
        """The product (Milan, Genoa, Turin)."""
        return self.report.product

    @property
    def key_kind(self) -> KeyKind:
        """``KeyKind.VCEK`` or ``KeyKind.VLEK``."""
        return self.chain.key_kind

    @property
    def signing_key(self) -> str:
        """``"vcek"`` or ``"vlek"``."""
        return self.chain.key_kind.value

    @property
    def certificates(self) -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
        """(leaf, ASK/ASVK, ARK)."""
        return (self.chain.leaf, self.chain.intermediate, self.chain.ark)

    @property
    def amd_root(self) -> bool:
        """Whether the chain ends in AMD's pinned ARK (not an explicitly configured one)."""
        return self.chain.amd_root


def _as_certificate(cert: x509.Certificate | bytes) -> x509.Certificate:
    return cert if isinstance(cert, x509.Certificate) else load_certificate(cert)


def _as_chain(chain: Sequence[x509.Certificate] | bytes | None) -> list[x509.Certificate]:
    if chain is None:
        return []
    if isinstance(chain, bytes):
        return load_certificates(chain)
    return list(chain)


def check_extensions(report: AttestationReport, chain: VerifiedChain) -> None:
    """V4 and V5: SIGNING_KEY, REPORTED_TCB and CHIP_ID against the leaf certificate."""
    expected_key = SigningKey.VCEK if chain.key_kind is KeyKind.VCEK else SigningKey.VLEK
    if report.signing_key is SigningKey.NONE:
        raise VerificationError("report SIGNING_KEY is 7 (unsigned report)")
    if report.signing_key is not expected_key:
        raise VerificationError(
            f"report SIGNING_KEY says {report.signing_key.name} but a "
            f"{chain.key_kind.name} certificate was supplied"
        )
    ext = chain.extensions
    if report.reported_tcb != ext.tcb:
        raise VerificationError(
            f"REPORTED_TCB {report.reported_tcb.components()} does not match the "
            f"{chain.key_kind.name}'s SPLs {ext.tcb.components()}"
        )
    if chain.key_kind is KeyKind.VLEK or report.mask_chip_key:
        return
    hw_id = ext.hw_id
    if hw_id is None:  # guarded by verify_chain C1; kept for direct callers
        raise VerificationError("VCEK has no hwID")
    if report.product is Product.TURIN and len(hw_id) == _TURIN_HWID:
        if report.chip_id[:_TURIN_HWID] != hw_id or any(report.chip_id[_TURIN_HWID:]):
            raise VerificationError(
                f"CHIP_ID {report.chip_id.hex()} does not match the Turin VCEK hwID "
                f"{hw_id.hex()} (first 8 bytes, rest zero)"
            )
    elif report.chip_id != hw_id:
        raise VerificationError(
            f"CHIP_ID {report.chip_id[:8].hex()}... does not match the VCEK hwID "
            f"{hw_id[:8].hex()}..."
        )


def verify_signature(raw: bytes, report: AttestationReport, leaf: x509.Certificate) -> None:
    """V6: ECDSA P-384 / SHA-384 over ``raw[0x000:0x2A0]`` with the leaf's key."""
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise VerificationError("endorsement key is not EC P-384")
    r, s = report.signature_r, report.signature_s
    if not (0 < r < _P384_ORDER and 0 < s < _P384_ORDER):
        raise VerificationError("report signature R/S out of range for P-384")
    try:
        key.verify(encode_dss_signature(r, s), raw[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise VerificationError(
            "report signature does not verify with the endorsement key"
        ) from None


def verify_report(
    report: bytes | AttestationReport,
    cert: x509.Certificate | bytes,
    chain: Sequence[x509.Certificate] | bytes | None = None,
    *,
    at: datetime,
    roots: TrustedRoots | None = None,
    product: Product | None = None,
    crl: x509.CertificateRevocationList | None = None,
) -> VerifiedReport:
    """Verify authenticity (checklist V1-V6 in the module docstring).

    ``report``: the 0x4A0 report bytes (or a parsed report); ``cert``: the VCEK/VLEK
    (DER/PEM bytes or a certificate); ``chain``: ASK/ASVK and ARK as AMD serves them
    (PEM bytes or certificates; may be omitted when ``roots`` holds them); ``at``:
    the reference time (timezone-aware); ``roots``: trusted roots (default AMD's pins);
    ``product``: the expected product, if known; ``crl``: optional ARK CRL.
    Raises :class:`MalformedError` for unparsable input and :class:`VerificationError`
    when the evidence is not authentic.
    """
    roots = roots if roots is not None else TrustedRoots.amd_default()
    # V1: parse
    leaf = _as_certificate(cert)
    others = _as_chain(chain)
    raw = report.to_bytes() if isinstance(report, AttestationReport) else bytes(report)
    version = AttestationReport.peek_version(raw)
    if version == 2:
        if product is not None:
            parse_product: Product | None = product
        else:
            parse_product = parse_endorsement_extensions(leaf).product
    else:
        parse_product = None
    parsed = AttestationReport.from_bytes(raw, parse_product)
    # V2: product agreement (the chain check compares the certificate's productName)
    if product is not None and parsed.product is not product:
        raise VerificationError(
            f"report is for {parsed.product.value}, not the expected {product.value}"
        )
    # V3: root pin and chain
    verified_chain = verify_chain(leaf, others, roots, at, product=parsed.product, crl=crl)
    # V4, V5: signing-key kind, extensions against the report
    check_extensions(parsed, verified_chain)
    # V6: the signature
    verify_signature(raw, parsed, leaf)
    return VerifiedReport(report=parsed, raw=raw, chain=verified_chain, at=at)
