"""Report authenticity (checklist V1-V6 of attestation._verify) on real and generated vectors."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation import (
    AppraisalOptions,
    AttestationReport,
    KeyKind,
    TrustedRoots,
    appraise,
    load_certificate,
    load_certificates,
    verify_report,
)
from attestation._errors import MalformedError, VerificationError
from attestation._types import Product, TcbVersion

AT = datetime(2025, 1, 1, tzinfo=UTC)
VECTORS = Path(__file__).resolve().parent / "vectors" / "snp_chains"
VAT = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
def milan(snp_vectors: Path) -> tuple[bytes, bytes, bytes]:
    d = snp_vectors / "go-sev-guest-milan"
    return (
        (d / "attestation.bin").read_bytes(),
        (d / "vcek.der").read_bytes(),
        (d / "ask_ark.pem").read_bytes(),
    )


def test_real_milan_report_is_authentic(milan: tuple[bytes, bytes, bytes]) -> None:
    report, vcek, chain = milan
    v = verify_report(report, vcek, chain, at=AT)
    assert v.signing_key == "vcek"
    assert v.key_kind is KeyKind.VCEK
    assert v.product is Product.MILAN
    assert v.amd_root
    assert v.report.version == 2
    assert v.raw == report
    leaf, ask, ark = v.certificates
    assert "SEV-VCEK" in leaf.subject.rfc4514_string()
    assert "SEV-Milan" in ask.subject.rfc4514_string()
    assert "ARK-Milan" in ark.subject.rfc4514_string()


def test_real_milan_report_rejected_by_no_debug_policy(milan: tuple[bytes, bytes, bytes]) -> None:
    report, vcek, chain = milan
    v = verify_report(report, vcek, chain, at=AT)
    failures = appraise(v.report, AppraisalOptions(forbid_debug=True))
    assert len(failures) == 1
    assert "POLICY.DEBUG" in failures[0]


def test_accepts_parsed_report_and_certificates(milan: tuple[bytes, bytes, bytes]) -> None:
    report, vcek, chain = milan
    parsed = AttestationReport.from_bytes(report, Product.MILAN)
    v = verify_report(
        parsed, load_certificate(vcek), load_certificates(chain), at=AT, product=Product.MILAN
    )
    assert v.report == parsed


def test_wrong_expected_product(milan: tuple[bytes, bytes, bytes]) -> None:
    report, vcek, chain = milan
    with pytest.raises(VerificationError, match="not the expected Genoa"):
        verify_report(report, vcek, chain, at=AT, product=Product.GENOA)


def test_expired_reference_time(milan: tuple[bytes, bytes, bytes]) -> None:
    report, vcek, chain = milan
    with pytest.raises(VerificationError, match="expired"):
        verify_report(report, vcek, chain, at=datetime(2029, 9, 25, tzinfo=UTC))


def test_turin_chain_cannot_sign_milan_report(
    snp_vectors: Path, milan: tuple[bytes, bytes, bytes]
) -> None:
    report, _vcek, _chain = milan
    d = snp_vectors / "virtee-turin"
    # The v2 report takes its product from the VCEK (Turin) and then its TCB layout;
    # either the parse fails or the chain/extension checks do, never success.
    with pytest.raises((VerificationError, MalformedError)):
        verify_report(
            report, (d / "vcek.der").read_bytes(), (d / "cert_chain.pem").read_bytes(), at=AT
        )


def _patch(raw: bytes, offset: int, value: bytes) -> bytes:
    b = bytearray(raw)
    b[offset : offset + len(value)] = value
    return bytes(b)


def test_tcb_and_chip_id_mismatch(milan: tuple[bytes, bytes, bytes]) -> None:
    report, vcek, chain = milan
    with pytest.raises(VerificationError, match="REPORTED_TCB"):
        verify_report(_patch(report, 0x180, b"\x03"), vcek, chain, at=AT)
    with pytest.raises(VerificationError, match="CHIP_ID"):
        verify_report(_patch(report, 0x1A0, b"\x00"), vcek, chain, at=AT)
    # report claims the VLEK signed it
    with pytest.raises(VerificationError, match="SIGNING_KEY says VLEK"):
        verify_report(_patch(report, 0x48, b"\x04"), vcek, chain, at=AT)
    with pytest.raises(VerificationError, match="unsigned"):
        verify_report(_patch(report, 0x48, b"\x1c"), vcek, chain, at=AT)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x02\x00\x00\x00", bytes(0x4A0 - 1), bytes(0x4A0 + 1), b"garbage" * 200],
)
def test_truncated_oversized_garbage(milan: tuple[bytes, bytes, bytes], data: bytes) -> None:
    _report, vcek, chain = milan
    with pytest.raises(MalformedError):
        verify_report(data, vcek, chain, at=AT)


def test_truncated_and_extended_real_report(milan: tuple[bytes, bytes, bytes]) -> None:
    report, vcek, chain = milan
    with pytest.raises(MalformedError, match="0x4A0"):
        verify_report(report[:-1], vcek, chain, at=AT)
    with pytest.raises(MalformedError, match="0x4A0"):
        verify_report(report + b"\0", vcek, chain, at=AT)


def test_signature_tamper(milan: tuple[bytes, bytes, bytes]) -> None:
    report, vcek, chain = milan
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify_report(_patch(report, 0x2A0, bytes([report[0x2A0] ^ 1])), vcek, chain, at=AT)
    # zero R is out of range
    with pytest.raises(VerificationError, match="out of range"):
        verify_report(_patch(report, 0x2A0, bytes(72)), vcek, chain, at=AT)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(offset=st.integers(0, 0x29F), delta=st.integers(1, 255))
def test_any_single_byte_change_in_signed_region_is_inauthentic(
    milan: tuple[bytes, bytes, bytes], offset: int, delta: int
) -> None:
    report, vcek, chain = milan
    mutated = _patch(report, offset, bytes([report[offset] ^ delta]))
    with pytest.raises((VerificationError, MalformedError)):
        verify_report(mutated, vcek, chain, at=AT)


def _vec(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_generated_vcek_and_vlek_roundtrip() -> None:
    roots = TrustedRoots.from_dir(VECTORS / "roots")
    v = verify_report(
        _vec("report_vcek.bin"), _vec("vcek.pem"), _vec("chain.pem"), at=VAT, roots=roots
    )
    assert v.signing_key == "vcek" and not v.amd_root
    w = verify_report(
        _vec("report_vlek.bin"), _vec("vlek.pem"), _vec("vlek_chain.pem"), at=VAT, roots=roots
    )
    assert w.signing_key == "vlek"
    assert w.chain.extensions.csp_id == "test-csp"


def test_generated_report_rejected_without_explicit_roots() -> None:
    with pytest.raises(VerificationError, match="not a trusted Milan root"):
        verify_report(_vec("report_vcek.bin"), _vec("vcek.pem"), _vec("chain.pem"), at=VAT)


def _sign_turin(chip_id: bytes) -> tuple[bytes, object]:
    """A Turin v5 report signed by a throwaway key (for CHIP_ID handling unit tests)."""
    key = ec.generate_private_key(ec.SECP384R1())
    tcb = TcbVersion(bootloader=1, tee=1, snp=1, microcode=1, fmc=1)
    r = AttestationReport(
        product=Product.TURIN,
        version=5,
        current_tcb=tcb,
        reported_tcb=tcb,
        committed_tcb=tcb,
        launch_tcb=tcb,
        cpuid_fam_id=0x1A,
        cpuid_mod_id=0x02,
        cpuid_step=0,
        launch_mit_vector=0,
        current_mit_vector=0,
        chip_id=chip_id,
    )
    rr, ss = decode_dss_signature(key.sign(r.signed_bytes(), ec.ECDSA(hashes.SHA384())))
    return r.with_signature(rr, ss).to_bytes(), key


def test_turin_chip_id_rule() -> None:
    from attestation._certs import EndorsementExtensions, VerifiedChain
    from attestation._verify import check_extensions

    hw = bytes.fromhex("1e550a8ee5cf9f4d")
    tcb = TcbVersion(bootloader=1, tee=1, snp=1, microcode=1, fmc=1)
    ext = EndorsementExtensions(product_name="Turin", product=Product.TURIN, tcb=tcb, hw_id=hw)
    leaf = load_certificate(_vec("vcek.pem"))  # only used as a placeholder
    chain = VerifiedChain(
        product=Product.TURIN,
        key_kind=KeyKind.VCEK,
        leaf=leaf,
        intermediate=leaf,
        ark=leaf,
        extensions=ext,
        amd_root=False,
    )
    good, _ = _sign_turin(hw + bytes(56))
    check_extensions(AttestationReport.from_bytes(good), chain)
    bad_tail, _ = _sign_turin(hw + b"\x01" + bytes(55))
    with pytest.raises(VerificationError, match="rest zero"):
        check_extensions(AttestationReport.from_bytes(bad_tail), chain)
    other, _ = _sign_turin(b"\xff" * 8 + bytes(56))
    with pytest.raises(VerificationError, match="Turin VCEK hwID"):
        check_extensions(AttestationReport.from_bytes(other), chain)
    fmc_off = dataclasses.replace(ext, tcb=dataclasses.replace(tcb, fmc=2))
    with pytest.raises(VerificationError, match="REPORTED_TCB"):
        check_extensions(
            AttestationReport.from_bytes(good), dataclasses.replace(chain, extensions=fmc_off)
        )
