"""AMD certificate chains: pins, link-by-link checks, extensions (VCEK spec 57230)."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from attestation import (
    AMD_ARK_SPKI_SHA256,
    KeyKind,
    TrustedRoots,
    load_certificate,
    load_certificates,
    load_crl,
    parse_endorsement_extensions,
    spki_sha256,
    verify_chain,
)
from attestation._errors import MalformedError, VerificationError
from attestation._types import Product, TcbVersion

AT = datetime(2025, 1, 1, tzinfo=UTC)
VECTORS = Path(__file__).resolve().parent / "vectors" / "snp_chains"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
VAT = datetime.fromisoformat(MANIFEST["at"])


def _milan(snp_vectors: Path) -> tuple[x509.Certificate, list[x509.Certificate]]:
    d = snp_vectors / "go-sev-guest-milan"
    return (
        load_certificate((d / "vcek.der").read_bytes()),
        load_certificates((d / "ask_ark.pem").read_bytes()),
    )


def _turin(snp_vectors: Path) -> tuple[x509.Certificate, list[x509.Certificate]]:
    d = snp_vectors / "virtee-turin"
    return (
        load_certificate((d / "vcek.der").read_bytes()),
        load_certificates((d / "cert_chain.pem").read_bytes()),
    )


@pytest.mark.parametrize("product", list(Product))
def test_pins_match_amd_roots(snp_vectors: Path, product: Product) -> None:
    ark = load_certificate(
        (snp_vectors / "amd-roots" / product.value.lower() / "ark.pem").read_bytes()
    )
    assert spki_sha256(ark) == AMD_ARK_SPKI_SHA256[product]
    assert TrustedRoots.amd_default().is_pinned(product, ark)
    other = next(p for p in Product if p is not product)
    assert not TrustedRoots.amd_default().is_pinned(other, ark)


def test_vcek_parse_warning_is_contained(snp_vectors: Path) -> None:
    # pytest runs with warnings as errors: loading AMD's zero-serial VCEK must not warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cert = load_certificate((snp_vectors / "go-sev-guest-milan" / "vcek.der").read_bytes())
    assert cert.subject.rfc4514_string().startswith("CN=SEV-VCEK")
    # ... and the filter did not leak: the same warning still fires outside the loader
    with pytest.warns(Warning, match="serial number"):
        x509.load_der_x509_certificate(
            (snp_vectors / "go-sev-guest-milan" / "vcek.der").read_bytes()
        )


def test_real_milan_chain(snp_vectors: Path) -> None:
    leaf, chain = _milan(snp_vectors)
    vc = verify_chain(leaf, chain, TrustedRoots.amd_default(), AT)
    assert vc.product is Product.MILAN
    assert vc.key_kind is KeyKind.VCEK
    assert vc.amd_root
    assert vc.root_pin == AMD_ARK_SPKI_SHA256[Product.MILAN]
    assert vc.extensions.product_name == "Milan-B0"
    assert vc.extensions.tcb == TcbVersion(bootloader=2, tee=0, snp=5, microcode=68)
    assert vc.extensions.hw_id is not None and len(vc.extensions.hw_id) == 64
    assert vc.extensions.csp_id is None


def test_real_turin_chain(snp_vectors: Path) -> None:
    leaf, chain = _turin(snp_vectors)
    vc = verify_chain(leaf, chain, TrustedRoots.amd_default(), AT, product=Product.TURIN)
    assert vc.product is Product.TURIN
    ext = vc.extensions
    assert ext.product_name == "Turin"
    assert ext.tcb.fmc == 0 and ext.tcb.microcode == 9
    assert ext.hw_id is not None and len(ext.hw_id) == 8


def test_wrong_product(snp_vectors: Path) -> None:
    leaf, chain = _milan(snp_vectors)
    with pytest.raises(VerificationError, match="not the expected Genoa"):
        verify_chain(leaf, chain, TrustedRoots.amd_default(), AT, product=Product.GENOA)


def test_genoa_ask_substituted(snp_vectors: Path) -> None:
    leaf, _chain = _milan(snp_vectors)
    genoa = load_certificates(
        (snp_vectors / "amd-roots" / "genoa" / "ask.pem").read_bytes()
        + (snp_vectors / "amd-roots" / "genoa" / "ark.pem").read_bytes()
    )
    with pytest.raises(VerificationError, match="no ASK"):
        verify_chain(leaf, genoa, TrustedRoots.amd_default(), AT)


def test_turin_ark_swapped_in(snp_vectors: Path) -> None:
    leaf, chain = _milan(snp_vectors)
    turin_ark = load_certificate((snp_vectors / "amd-roots" / "turin" / "ark.pem").read_bytes())
    with pytest.raises(VerificationError, match="no ARK"):
        verify_chain(leaf, [chain[0], turin_ark], TrustedRoots.amd_default(), AT)


def test_missing_ark(snp_vectors: Path) -> None:
    leaf, chain = _milan(snp_vectors)
    with pytest.raises(VerificationError, match="supply AMD's cert_chain"):
        verify_chain(leaf, chain[:1], TrustedRoots.amd_default(), AT)


def test_expired_at_reference_time(snp_vectors: Path) -> None:
    leaf, chain = _milan(snp_vectors)
    with pytest.raises(VerificationError, match="VCEK: expired"):
        verify_chain(leaf, chain, TrustedRoots.amd_default(), datetime(2030, 1, 1, tzinfo=UTC))
    with pytest.raises(VerificationError, match="not yet valid"):
        verify_chain(leaf, chain, TrustedRoots.amd_default(), datetime(2021, 1, 1, tzinfo=UTC))


def test_naive_reference_time_rejected(snp_vectors: Path) -> None:
    leaf, chain = _milan(snp_vectors)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_chain(leaf, chain, TrustedRoots.amd_default(), datetime(2025, 1, 1))


def test_custom_roots_do_not_trust_amd(snp_vectors: Path) -> None:
    leaf, chain = _milan(snp_vectors)
    roots = TrustedRoots.from_dir(VECTORS / "roots")
    assert not roots.amd
    assert roots.products() == [Product.MILAN]
    with pytest.raises(VerificationError, match="not a trusted Milan root"):
        verify_chain(leaf, chain, roots, AT)


def test_amd_roots_do_not_trust_test_root() -> None:
    leaf = load_certificate((VECTORS / "vcek.pem").read_bytes())
    chain = load_certificates((VECTORS / "chain.pem").read_bytes())
    with pytest.raises(VerificationError, match="not a trusted Milan root"):
        verify_chain(leaf, chain, TrustedRoots.amd_default(), VAT)


def test_roots_without_intermediates() -> None:
    ark = load_certificate((VECTORS / "roots" / "milan" / "ark.pem").read_bytes())
    roots = TrustedRoots.from_certificates([ark])
    leaf = load_certificate((VECTORS / "vcek.pem").read_bytes())
    with pytest.raises(VerificationError, match="no ASK"):
        verify_chain(leaf, [], roots, VAT)
    ask = load_certificates((VECTORS / "ask_only.pem").read_bytes())
    assert verify_chain(leaf, ask, roots, VAT).key_kind is KeyKind.VCEK


def test_roots_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(MalformedError, match="does not exist"):
        TrustedRoots.from_dir(tmp_path / "nope")
    with pytest.raises(MalformedError, match="holds no"):
        TrustedRoots.from_dir(tmp_path)
    (tmp_path / "genoa").mkdir()
    (tmp_path / "genoa" / "ark.pem").write_bytes(
        (VECTORS / "roots" / "milan" / "ark.pem").read_bytes()
    )
    with pytest.raises(MalformedError, match="does not name Genoa"):
        TrustedRoots.from_dir(tmp_path)


def test_crl_checks() -> None:
    roots = TrustedRoots.from_dir(VECTORS / "roots")
    leaf = load_certificate((VECTORS / "vcek.pem").read_bytes())
    chain = load_certificates((VECTORS / "chain.pem").read_bytes())
    ok = load_crl((VECTORS / "crl_ok.der").read_bytes())
    assert verify_chain(leaf, chain, roots, VAT, crl=ok).crl_checked
    with pytest.raises(VerificationError, match="stale"):
        verify_chain(leaf, chain, roots, datetime(2027, 1, 1, tzinfo=UTC), crl=ok)
    with pytest.raises(VerificationError, match="dated after"):
        verify_chain(leaf, chain, roots, datetime(2024, 6, 1, tzinfo=UTC), crl=ok)
    revoked = load_crl((VECTORS / "crl_revoked.der").read_bytes())
    with pytest.raises(VerificationError, match="revoked"):
        verify_chain(leaf, chain, roots, VAT, crl=revoked)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\x30\x03\x02\x01\x00",
        b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    ],
)
def test_garbage_certificates(data: bytes) -> None:
    with pytest.raises(MalformedError):
        load_certificate(data)


def test_pem_and_der_agree(snp_vectors: Path) -> None:
    pem = (snp_vectors / "go-sev-guest-milan" / "ask_ark.pem").read_bytes()
    certs = load_certificates(pem)
    assert [c.subject.rfc4514_string().split(",")[0] for c in certs] == [
        "CN=SEV-Milan",
        "CN=ARK-Milan",
    ]
    with pytest.raises(MalformedError, match="expected one certificate"):
        load_certificate(pem)


def test_extensions_need_product_name() -> None:
    ark = load_certificate((VECTORS / "roots" / "milan" / "ark.pem").read_bytes())
    with pytest.raises(MalformedError, match="productName"):
        parse_endorsement_extensions(ark)


CASES = sorted(MANIFEST["cases"])


@pytest.mark.parametrize("case", CASES)
def test_generated_vectors(case: str) -> None:
    """Pinned bad-chain vectors (tests/vectors/make_bad_chains.py), through verify_report."""
    from attestation import verify_report

    spec = MANIFEST["cases"][case]
    roots = TrustedRoots.from_dir(VECTORS / MANIFEST["roots"])
    chain = (VECTORS / spec["chain"]).read_bytes() if spec["chain"] else None
    crl = load_crl((VECTORS / spec["crl"]).read_bytes()) if spec["crl"] else None
    args = ((VECTORS / spec["report"]).read_bytes(), (VECTORS / spec["leaf"]).read_bytes(), chain)
    if spec["expect"] is None:
        verified = verify_report(*args, at=VAT, roots=roots, crl=crl)
        assert not verified.amd_root
        return
    with pytest.raises(VerificationError) as info:
        verify_report(*args, at=VAT, roots=roots, crl=crl)
    assert spec["expect"] in str(info.value)
