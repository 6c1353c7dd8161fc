"""ATTESTATION_REPORT parsing and serialization (ABI spec 56860, Table 23)."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation import AttestationReport, GuestPolicy, PlatformInfo, SigningKey
from attestation._abi import REPORT_SIZE, product_from_cpuid
from attestation._errors import MalformedError
from attestation._types import Product, TcbVersion


@pytest.fixture
def milan_bytes(snp_vectors: Path) -> bytes:
    return (snp_vectors / "go-sev-guest-milan" / "attestation.bin").read_bytes()


def _tcb(product: Product, n: int = 1) -> TcbVersion:
    return TcbVersion(bootloader=n, tee=n, snp=n, microcode=n, fmc=n if product.has_fmc else None)


def _make(product: Product, version: int, **kw: object) -> AttestationReport:
    cpuid = {
        Product.MILAN: (0x19, 0x01, 0x01),
        Product.GENOA: (0x19, 0x11, 0x01),
        Product.TURIN: (0x1A, 0x02, 0x00),
    }[product]
    args: dict[str, object] = {
        "product": product,
        "version": version,
        "current_tcb": _tcb(product, 3),
        "reported_tcb": _tcb(product, 2),
        "committed_tcb": _tcb(product, 3),
        "launch_tcb": _tcb(product, 3),
        "policy": GuestPolicy(abi_major=1, abi_minor=55, smt=True),
        "platform_info": PlatformInfo(smt_enabled=True, tsme_enabled=True),
        "measurement": bytes(range(48)),
        "report_data": b"\x11" * 64,
        "host_data": b"\x22" * 32,
        "chip_id": b"\x33" * 64,
        "signature_r": 12345,
        "signature_s": 67890,
    }
    if version >= 3:
        args.update(cpuid_fam_id=cpuid[0], cpuid_mod_id=cpuid[1], cpuid_step=cpuid[2])
    if version >= 5:
        args.update(launch_mit_vector=5, current_mit_vector=7)
    args.update(kw)
    return AttestationReport(**args)  # type: ignore[arg-type]


def test_real_milan_report_fields(milan_bytes: bytes) -> None:
    r = AttestationReport.from_bytes(milan_bytes, Product.MILAN)
    assert r.version == 2
    assert r.product is Product.MILAN
    assert r.policy.to_u64() == 0xB0000
    assert r.policy.debug and r.policy.smt and not r.policy.migrate_ma
    assert r.platform_info.smt_enabled and not r.platform_info.tsme_enabled
    assert r.vmpl == 0
    assert r.signing_key is SigningKey.VCEK
    assert r.reported_tcb == TcbVersion(bootloader=2, tee=0, snp=5, microcode=68)
    assert r.report_data[:5] == bytes([1, 2, 3, 4, 5])
    assert r.measurement.hex().startswith("b07af962")
    assert r.chip_id.hex().startswith("3ac3fe21")
    assert (r.current_major, r.current_minor, r.current_build) == (1, 49, 3)
    assert r.cpuid_fam_id is None and r.launch_mit_vector is None
    assert r.signature_r > 0 and r.signature_s > 0
    assert r.to_bytes() == milan_bytes
    assert r.signed_bytes() == milan_bytes[:0x2A0]


def test_v2_needs_product(milan_bytes: bytes) -> None:
    with pytest.raises(MalformedError, match="does not name its product"):
        AttestationReport.from_bytes(milan_bytes)


@pytest.mark.parametrize("product", list(Product))
@pytest.mark.parametrize("version", [2, 3, 5])
def test_roundtrip_all_versions(product: Product, version: int) -> None:
    r = _make(product, version)
    raw = r.to_bytes()
    assert len(raw) == REPORT_SIZE
    back = AttestationReport.from_bytes(raw, product if version == 2 else None)
    assert back == r
    assert back.product is product
    if product is Product.TURIN:
        assert back.reported_tcb.fmc == 2


def test_turin_tcb_layout_offsets() -> None:
    r = _make(Product.TURIN, 5, reported_tcb=TcbVersion(1, 2, 3, 4, fmc=9))
    raw = r.to_bytes()
    assert raw[0x180:0x188] == bytes([9, 1, 2, 3, 0, 0, 0, 4])
    m = _make(Product.MILAN, 3, reported_tcb=TcbVersion(1, 2, 3, 4))
    assert m.to_bytes()[0x180:0x188] == bytes([1, 2, 0, 0, 0, 0, 3, 4])


def test_field_offsets() -> None:
    r = _make(Product.GENOA, 5, vmpl=2, guest_svn=9, signing_key=SigningKey.VLEK)
    raw = r.to_bytes()
    assert struct.unpack_from("<I", raw, 0x00)[0] == 5
    assert struct.unpack_from("<I", raw, 0x04)[0] == 9
    assert struct.unpack_from("<I", raw, 0x30)[0] == 2
    assert struct.unpack_from("<I", raw, 0x34)[0] == 1
    assert struct.unpack_from("<I", raw, 0x48)[0] == 1 << 2
    assert raw[0x90:0xC0] == bytes(range(48))
    assert raw[0x188:0x18B] == bytes([0x19, 0x11, 0x01])
    assert struct.unpack_from("<QQ", raw, 0x1F8) == (5, 7)
    assert int.from_bytes(raw[0x2A0:0x2E8], "little") == 12345
    assert int.from_bytes(raw[0x2E8:0x330], "little") == 67890


def test_with_signature() -> None:
    r = _make(Product.MILAN, 3)
    s = r.with_signature(1, 2)
    assert (s.signature_r, s.signature_s) == (1, 2)
    assert s.signed_bytes() == r.signed_bytes()


@pytest.mark.parametrize("size", [0, 100, REPORT_SIZE - 1, REPORT_SIZE + 1, 4096])
def test_wrong_size(size: int) -> None:
    with pytest.raises(MalformedError, match="0x4A0"):
        AttestationReport.from_bytes(bytes(size), Product.MILAN)


def _patched(raw: bytes, offset: int, value: bytes) -> bytes:
    b = bytearray(raw)
    b[offset : offset + len(value)] = value
    return bytes(b)


@pytest.mark.parametrize("version", [0, 1, 4, 6, 0xFFFFFFFF])
def test_unknown_version(milan_bytes: bytes, version: int) -> None:
    bad = _patched(milan_bytes, 0, version.to_bytes(4, "little"))
    with pytest.raises(MalformedError, match="unsupported report version"):
        AttestationReport.from_bytes(bad, Product.MILAN)


@pytest.mark.parametrize("algo", [0, 2, 0x100])
def test_unknown_signature_algorithm(milan_bytes: bytes, algo: int) -> None:
    bad = _patched(milan_bytes, 0x34, algo.to_bytes(4, "little"))
    with pytest.raises(MalformedError, match="unknown signature algorithm"):
        AttestationReport.from_bytes(bad, Product.MILAN)


@pytest.mark.parametrize(
    ("offset", "match"),
    [
        (0x04C, "reserved bytes 0x04c"),
        (0x18B, "reserved"),
        (0x188, "CPUID in version 3"),
        (0x19F, "reserved"),
        (0x1EB, "0x1eb"),
        (0x1EF, "0x1ef"),
        (0x1F8, "0x1f8"),
        (0x29F, "reserved"),
        (0x330, "signature reserved"),
        (0x49F, "signature reserved"),
    ],
)
def test_mbz_ranges(milan_bytes: bytes, offset: int, match: str) -> None:
    bad = _patched(milan_bytes, offset, b"\x01")
    with pytest.raises(MalformedError, match=match):
        AttestationReport.from_bytes(bad, Product.MILAN)


def test_reserved_bits() -> None:
    base = _make(Product.MILAN, 3).to_bytes()
    with pytest.raises(MalformedError, match="bits 31:5"):
        AttestationReport.from_bytes(_patched(base, 0x48, b"\x20"))
    with pytest.raises(MalformedError, match="SIGNING_KEY 2 is reserved"):
        AttestationReport.from_bytes(_patched(base, 0x48, b"\x08"))
    with pytest.raises(MalformedError, match="bit 17 must be one"):
        AttestationReport.from_bytes(_patched(base, 0x08, (0x10000).to_bytes(8, "little")))
    with pytest.raises(MalformedError, match="63:26"):
        AttestationReport.from_bytes(_patched(base, 0x08, (0x4020000).to_bytes(8, "little")))
    with pytest.raises(MalformedError, match="PLATFORM_INFO"):
        AttestationReport.from_bytes(_patched(base, 0x40, b"\x40"))
    with pytest.raises(MalformedError, match="REPORTED_TCB"):
        AttestationReport.from_bytes(_patched(base, 0x182, b"\x01"))


def test_mit_vector_region_mbz_before_v5() -> None:
    base = _make(Product.TURIN, 3).to_bytes()
    with pytest.raises(MalformedError, match="0x1f8"):
        AttestationReport.from_bytes(_patched(base, 0x200, b"\x01"))
    v5 = _make(Product.TURIN, 5).to_bytes()
    with pytest.raises(MalformedError, match="0x208"):
        AttestationReport.from_bytes(_patched(v5, 0x208, b"\x01"))


def test_cpuid_product_inference_and_conflict() -> None:
    raw = _make(Product.GENOA, 3).to_bytes()
    assert AttestationReport.from_bytes(raw).product is Product.GENOA
    with pytest.raises(MalformedError, match="CPUID says Genoa"):
        AttestationReport.from_bytes(raw, Product.MILAN)
    with pytest.raises(MalformedError, match="not a known SEV-SNP product"):
        AttestationReport.from_bytes(_patched(raw, 0x188, b"\x17"))
    assert product_from_cpuid(0x19, 0x01) is Product.MILAN
    assert product_from_cpuid(0x19, 0xA0) is Product.GENOA
    assert product_from_cpuid(0x1A, 0x11) is Product.TURIN


def test_mask_chip_key_requires_zero_chip_id() -> None:
    with pytest.raises(MalformedError, match="MASK_CHIP_KEY"):
        _make(Product.MILAN, 3, mask_chip_key=True)
    r = _make(Product.MILAN, 3, mask_chip_key=True, chip_id=bytes(64))
    assert AttestationReport.from_bytes(r.to_bytes()) == r


def test_constructor_invariants() -> None:
    with pytest.raises(MalformedError, match="measurement must be 48 bytes"):
        _make(Product.MILAN, 3, measurement=b"x")
    with pytest.raises(MalformedError, match="needs"):
        _make(Product.TURIN, 3, reported_tcb=TcbVersion(1, 1, 1, 1))
    with pytest.raises(MalformedError, match="has no FMC"):
        _make(Product.MILAN, 3, reported_tcb=TcbVersion(1, 1, 1, 1, fmc=1))
    with pytest.raises(MalformedError, match="carries CPUID"):
        _make(Product.MILAN, 3, cpuid_fam_id=None)
    with pytest.raises(MalformedError, match="no CPUID"):
        _make(Product.MILAN, 2, cpuid_fam_id=0x19)
    with pytest.raises(MalformedError, match="mitigation"):
        _make(Product.MILAN, 3, launch_mit_vector=1)
    with pytest.raises(MalformedError, match="signature_r"):
        _make(Product.MILAN, 3, signature_r=1 << 576)


def test_json_dict_has_everything(milan_bytes: bytes) -> None:
    r = AttestationReport.from_bytes(milan_bytes, Product.MILAN)
    d = r.to_json_dict()
    for f in dataclasses.fields(AttestationReport):
        if f.name.startswith(("current_b", "current_m", "committed_b", "committed_m")):
            continue
        assert f.name in d, f.name
    assert d["policy"]["debug"] is True
    assert d["reported_tcb"] == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_garbage_never_crashes(data: bytes) -> None:
    try:
        r = AttestationReport.from_bytes(data, Product.MILAN)
    except MalformedError:
        return
    assert r.to_bytes() == data


@settings(max_examples=100, deadline=None)
@given(offset=st.integers(0, REPORT_SIZE - 1), value=st.integers(0, 255))
def test_mutations_parse_canonically(offset: int, value: int) -> None:
    raw = _patched(_make(Product.TURIN, 5).to_bytes(), offset, bytes([value]))
    try:
        r = AttestationReport.from_bytes(raw)
    except MalformedError:
        return
    assert r.to_bytes() == raw
