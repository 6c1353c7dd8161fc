"""The simulated SEV-SNP platform: chain shape, state directory, ABI-exact signed reports."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from attestation import (
    AppraisalOptions,
    CertTable,
    ReportProvider,
    TrustedRoots,
    appraise,
    load_crl,
    verify_report,
)
from attestation._abi import SIGNED_SIZE, AttestationReport, GuestPolicy, SigningKey
from attestation._errors import MalformedError, VerificationError
from attestation._measure import LaunchArtifacts, launch_measurement
from attestation._sim import DEFAULT_TCB, SimulatedPlatform, SimulatedProvider
from attestation._sim_chain import SIMULATED_ORGANIZATION, der_uint
from attestation._types import OID, Product, TcbVersion
from pmc2.cli import main
from tests._ovmf import require_debian_ovmf

MEASUREMENT = bytes(range(48))
HOST_DATA = bytes(range(100, 132))


@pytest.fixture(scope="module")
def milan(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.create(tmp_path_factory.mktemp("sim") / "milan", Product.MILAN)


@pytest.fixture(scope="module")
def turin(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.create(tmp_path_factory.mktemp("sim") / "turin", Product.TURIN)


@pytest.fixture(params=["milan", "turin"])
def platform(request: pytest.FixtureRequest) -> SimulatedPlatform:
    p: SimulatedPlatform = request.getfixturevalue(request.param)
    return p


def verify_report_signature(raw: bytes, cert: x509.Certificate) -> None:
    """ECDSA P-384/SHA-384 over 0x000-0x29F with R, S little-endian (72-byte fields)."""
    r = int.from_bytes(raw[0x2A0 : 0x2A0 + 72], "little")
    s = int.from_bytes(raw[0x2E8 : 0x2E8 + 72], "little")
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(encode_dss_signature(r, s), raw[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))


def copy_state(platform: SimulatedPlatform, dest: Path) -> Path:
    """A copy of a module-scoped platform's state (RSA-4096 generation is slow)."""
    shutil.copytree(platform.state_dir, dest)
    return dest


def load_real_cert(path: Path) -> x509.Certificate:
    # AMD's VCEKs have serial 0; cryptography warns about exactly that when parsing.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*serial number.*")
        return x509.load_der_x509_certificate(path.read_bytes())


# --- state directory ----------------------------------------------------------------------


def test_state_layout_and_permissions(milan: SimulatedPlatform) -> None:
    d = milan.state_dir
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "keys").stat().st_mode) == 0o700
    for name in ("ark.key.pem", "ask.key.pem", "asvk.key.pem", "chip.seed", "vlek.seed"):
        assert stat.S_IMODE((d / "keys" / name).stat().st_mode) == 0o600
    for name in ("ark.pem", "ask.pem", "asvk.pem", "vcek.der", "vlek.der", "cert_chain.pem"):
        assert (d / "certs" / name).is_file()
    for name in ("ark.pem", "ask.pem", "asvk.pem"):
        assert (milan.roots_dir / "milan" / name).is_file()
    doc = json.loads((d / "platform.json").read_text())
    assert doc["product"] == "Milan"
    assert bytes.fromhex(doc["chip_id"]) == milan.chip_id
    assert not list(d.rglob(".*.tmp"))


def test_reload_keeps_identity(milan: SimulatedPlatform) -> None:
    again = SimulatedPlatform.load(milan.state_dir)
    assert again.chip_id == milan.chip_id
    assert again.ark == milan.ark
    assert again.vcek.public_key() == milan.vcek.public_key()
    raw = again.report(bytes(64), measurement=MEASUREMENT)
    verify_report_signature(raw, milan.vcek)
    assert SimulatedPlatform.open(milan.state_dir, Product.MILAN).chip_id == milan.chip_id


def test_open_refuses_other_product_and_create_refuses_nonempty(
    milan: SimulatedPlatform,
) -> None:
    with pytest.raises(MalformedError, match="holds a simulated Milan"):
        SimulatedPlatform.open(milan.state_dir, Product.TURIN)
    with pytest.raises(MalformedError, match="not empty"):
        SimulatedPlatform.create(milan.state_dir, Product.MILAN)


def test_load_refuses_readable_secrets(tmp_path: Path, milan: SimulatedPlatform) -> None:
    copy = copy_state(milan, tmp_path / "copy")
    os.chmod(copy / "keys" / "ark.key.pem", 0o644)
    with pytest.raises(MalformedError, match="group/others"):
        SimulatedPlatform.load(copy)


def test_load_rejects_missing_or_damaged_state(tmp_path: Path) -> None:
    with pytest.raises(MalformedError, match="no simulated platform"):
        SimulatedPlatform.load(tmp_path)
    (tmp_path / "platform.json").write_text('{"format": "other"}')
    with pytest.raises(MalformedError, match="not a pmc2-simulated-snp"):
        SimulatedPlatform.load(tmp_path)


# --- certificate shapes ---------------------------------------------------------------------


def _cn(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _org(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value)


def test_chain_names_keys_and_signatures(platform: SimulatedPlatform) -> None:
    prod = platform.product.value
    expected = [
        (platform.ark, f"ARK-{prod}", f"ARK-{prod}"),
        (platform.ask, f"SEV-{prod}", f"ARK-{prod}"),
        (platform.asvk, f"SEV-VLEK-{prod}", f"ARK-{prod}"),
        (platform.vcek, "SEV-VCEK", f"SEV-{prod}"),
        (platform.vlek, "SEV-VLEK", f"SEV-VLEK-{prod}"),
    ]
    for cert, subject, issuer in expected:
        assert _cn(cert.subject) == subject
        assert _cn(cert.issuer) == issuer
        # never mistakable for AMD's own certificates
        assert _org(cert.subject) == SIMULATED_ORGANIZATION
        assert "simulated" in cert.subject.rfc4514_string()
        params = cert.signature_algorithm_parameters
        assert params is not None
        assert params._salt_length == 48  # type: ignore[union-attr]
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    for cert in (platform.ark, platform.ask, platform.asvk):
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096
    for cert in (platform.vcek, platform.vlek):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert isinstance(key.curve, ec.SECP384R1)
        assert cert.serial_number != 0
    platform.ark.verify_directly_issued_by(platform.ark)
    platform.ask.verify_directly_issued_by(platform.ark)
    platform.asvk.verify_directly_issued_by(platform.ark)
    platform.vcek.verify_directly_issued_by(platform.ask)
    platform.vlek.verify_directly_issued_by(platform.asvk)


def _ext_values(cert: x509.Certificate) -> dict[str, bytes]:
    return {
        e.oid.dotted_string: e.value.value
        for e in cert.extensions
        if isinstance(e.value, x509.UnrecognizedExtension)
    }


@pytest.mark.parametrize(
    ("product", "vector"),
    [(Product.MILAN, "go-sev-guest-milan/vcek.der"), (Product.TURIN, "virtee-turin/vcek.der")],
)
def test_vcek_extensions_encoded_like_amds(
    request: pytest.FixtureRequest, snp_vectors: Path, product: Product, vector: str
) -> None:
    sim: SimulatedPlatform = request.getfixturevalue(product.value.lower())
    real = _ext_values(load_real_cert(snp_vectors / vector))
    ours = _ext_values(sim.vcek)
    assert list(ours) == list(real)  # same extensions in AMD's order
    for oid, value in real.items():
        if oid == OID.HW_ID:
            assert len(ours[oid]) == len(value)  # raw bytes, no inner tag
        else:
            assert ours[oid][0] == value[0]  # same DER type: INTEGER / IA5String
    tcb = sim.reported_tcb
    assert ours[OID.BL_SPL] == der_uint(tcb.bootloader)
    assert ours[OID.SNP_SPL] == der_uint(tcb.snp)
    assert ours[OID.UCODE_SPL] == der_uint(tcb.microcode)
    if product is Product.TURIN:
        assert ours[OID.HW_ID] == sim.chip_id[:8]
        assert ours[OID.FMC_SPL] == der_uint(tcb.fmc or 0)
    else:
        assert ours[OID.HW_ID] == sim.chip_id


def test_vlek_has_csp_id_and_no_hwid(platform: SimulatedPlatform) -> None:
    ext = _ext_values(platform.vlek)
    assert OID.HW_ID not in ext
    csp = ext[OID.CSP_ID]
    assert csp[0] == 0x16 and csp[2:].decode() == platform.csp_id


def test_der_uint() -> None:
    assert der_uint(0) == b"\x02\x01\x00"
    assert der_uint(0x44) == b"\x02\x01\x44"
    assert der_uint(0xD5) == b"\x02\x02\x00\xd5"
    assert der_uint(0x1234) == b"\x02\x02\x12\x34"


# --- reports --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3, 5])
def test_report_fields_and_signature(platform: SimulatedPlatform, version: int) -> None:
    report_data = os.urandom(64)
    raw = platform.report(
        report_data,
        measurement=MEASUREMENT,
        host_data=HOST_DATA,
        vmpl=1,
        version=version,
        guest_svn=7,
    )
    assert len(raw) == 0x4A0
    r = AttestationReport.from_bytes(raw, platform.product)
    assert r.to_bytes() == raw
    assert r.version == version
    assert r.product is platform.product
    assert (r.report_data, r.measurement, r.host_data) == (report_data, MEASUREMENT, HOST_DATA)
    assert r.vmpl == 1 and r.guest_svn == 7
    assert r.signing_key is SigningKey.VCEK
    assert r.chip_id == platform.chip_id
    assert r.reported_tcb == r.current_tcb == r.committed_tcb == r.launch_tcb
    assert r.reported_tcb == DEFAULT_TCB[platform.product]
    assert not r.policy.debug and r.policy.smt
    assert (r.cpuid_fam_id is None) == (version == 2)
    assert (r.launch_mit_vector is None) == (version < 5)
    verify_report_signature(raw, platform.vcek)


def test_vlek_report_signed_by_vlek(platform: SimulatedPlatform) -> None:
    raw = platform.report(bytes(64), measurement=MEASUREMENT, vlek=True)
    r = AttestationReport.from_bytes(raw)
    assert r.signing_key is SigningKey.VLEK
    assert raw[0x48] >> 2 & 7 == 1
    verify_report_signature(raw, platform.vlek)
    with pytest.raises(InvalidSignature):
        verify_report_signature(raw, platform.vcek)


def test_debug_flag_round_trips_into_policy(milan: SimulatedPlatform) -> None:
    raw = milan.report(bytes(64), measurement=MEASUREMENT, policy=GuestPolicy(debug=True))
    r = AttestationReport.from_bytes(raw)
    assert r.policy.debug and not r.policy.smt
    assert int.from_bytes(raw[8:16], "little") == 0xA0000  # DEBUG (bit 19) + reserved one (bit 17)


def test_every_signed_byte_matters(milan: SimulatedPlatform) -> None:
    raw = bytearray(milan.report(bytes(64), measurement=MEASUREMENT))
    raw[0x50] ^= 1  # REPORT_DATA
    with pytest.raises(InvalidSignature):
        verify_report_signature(bytes(raw), milan.vcek)


def test_launch_arguments_validated(milan: SimulatedPlatform) -> None:
    with pytest.raises(MalformedError, match="exactly one"):
        milan.launch()
    with pytest.raises(MalformedError, match="48 bytes"):
        milan.launch(measurement=bytes(47))
    with pytest.raises(MalformedError, match="32 bytes"):
        milan.launch(measurement=MEASUREMENT, host_data=bytes(31))
    with pytest.raises(MalformedError, match="version 4"):
        milan.launch(measurement=MEASUREMENT, version=4)
    guest = milan.launch(measurement=MEASUREMENT)
    with pytest.raises(MalformedError, match="64 bytes"):
        guest.report(bytes(63))
    with pytest.raises(MalformedError, match="VMPL"):
        guest.report(bytes(64), vmpl=4)


def test_measurement_from_launch_artifacts(milan: SimulatedPlatform) -> None:
    ovmf = require_debian_ovmf()
    artifacts = LaunchArtifacts.from_files(ovmf, vcpus=2)
    guest = milan.launch(artifacts=artifacts, host_data=HOST_DATA)
    r = AttestationReport.from_bytes(guest.report(bytes(64)))
    assert r.measurement == launch_measurement(artifacts)
    assert guest.artifacts == artifacts


# --- the ReportProvider -----------------------------------------------------------------------


def test_provider_protocol_and_cert_table(milan: SimulatedPlatform) -> None:
    guest = milan.launch(measurement=MEASUREMENT, host_data=HOST_DATA)
    assert isinstance(guest, SimulatedProvider)
    assert isinstance(guest, ReportProvider)
    a = guest.get_report(b"\x01" * 64)
    b = guest.get_report(b"\x02" * 64, vmpl=2)
    assert a.provider == "simulated"
    ra, rb = AttestationReport.from_bytes(a.report), AttestationReport.from_bytes(b.report)
    assert ra.measurement == rb.measurement == MEASUREMENT
    assert ra.host_data == rb.host_data == HOST_DATA
    assert ra.report_id == rb.report_id  # one guest, one REPORT_ID
    assert (ra.report_data, rb.report_data, rb.vmpl) == (b"\x01" * 64, b"\x02" * 64, 2)
    table = CertTable.from_bytes(a.certs.to_bytes(pad_to=4096))
    assert table.vcek is not None and table.ask is not None and table.ark is not None
    vcek = x509.load_der_x509_certificate(table.vcek)
    verify_report_signature(a.report, vcek)
    assert x509.load_der_x509_certificate(table.ask) == milan.ask
    other = milan.launch(measurement=MEASUREMENT)
    assert AttestationReport.from_bytes(other.report(bytes(64))).report_id != ra.report_id


def test_vlek_provider_cert_table(turin: SimulatedPlatform) -> None:
    got = turin.launch(measurement=MEASUREMENT, vlek=True).get_report(bytes(64))
    assert got.certs.vcek is None and got.certs.vlek is not None
    assert x509.load_der_x509_certificate(got.certs.ask or b"") == turin.asvk
    verify_report_signature(got.report, x509.load_der_x509_certificate(got.certs.vlek))


# --- TCB changes ------------------------------------------------------------------------------


def test_tcb_update_reissues_vcek(tmp_path: Path, milan: SimulatedPlatform) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    sim = SimulatedPlatform.load(copy_state(milan, tmp_path / "s"))
    old_key = sim.vcek.public_key()
    newer = TcbVersion(bootloader=5, tee=1, snp=24, microcode=220)
    sim.set_tcb(current=newer, reported=newer, committed=newer, now=now)
    assert sim.vcek.public_key() != old_key  # VCEK keys are per TCB
    ext = _ext_values(sim.vcek)
    assert ext[OID.SNP_SPL] == der_uint(24)
    reloaded = SimulatedPlatform.load(tmp_path / "s")
    assert reloaded.reported_tcb == newer
    raw = reloaded.report(bytes(64), measurement=MEASUREMENT)
    assert AttestationReport.from_bytes(raw).reported_tcb == newer
    verify_report_signature(raw, reloaded.vcek)
    # a VCEK for another TCB does not verify the report
    stale = reloaded.vcek_certificate(DEFAULT_TCB[Product.MILAN])
    with pytest.raises(InvalidSignature):
        verify_report_signature(raw, stale)
    with pytest.raises(MalformedError, match="does not fit"):
        sim.set_tcb(current=TcbVersion(1, 1, 1, 1, fmc=1))


def test_crl_signed_by_ark(milan: SimulatedPlatform) -> None:
    crl = x509.load_der_x509_crl(milan.crl(revoked=(milan.ask.serial_number,)))
    assert crl.issuer == milan.ark.subject
    ark_key = milan.ark.public_key()
    assert isinstance(ark_key, rsa.RSAPublicKey)
    assert crl.is_signature_valid(ark_key)
    assert crl.get_revoked_certificate_by_serial_number(milan.ask.serial_number) is not None


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_simulate_writes_report_and_chain(
    tmp_path: Path, turin: SimulatedPlatform, capsys: pytest.CaptureFixture[str]
) -> None:
    state, out = copy_state(turin, tmp_path / "state"), tmp_path / "out" / "report.bin"
    argv = ["snp", "simulate", "--state", str(state), "--product", "turin"]
    argv += ["--measurement", MEASUREMENT.hex(), "--host-data", HOST_DATA.hex()]
    argv += ["--report-data", "aa" * 32, "--debug", "--out", str(out), "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    raw = out.read_bytes()
    r = AttestationReport.from_bytes(raw)
    assert r.product is Product.TURIN and r.policy.debug
    assert r.report_data == b"\xaa" * 32 + bytes(32)
    assert r.measurement == MEASUREMENT and r.host_data == HOST_DATA
    vcek = x509.load_der_x509_certificate((out.parent / "vcek.der").read_bytes())
    verify_report_signature(raw, vcek)
    chain = x509.load_pem_x509_certificates((out.parent / "cert_chain.pem").read_bytes())
    assert [_cn(c.subject) for c in chain] == ["SEV-Turin", "ARK-Turin"]
    assert doc["roots"] == str(state / "roots")
    assert (state / "roots" / "turin" / "ark.pem").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--measurement", "00"], "exactly 48"),
        ([], "--measurement HEX or --ovmf"),
        (["--measurement", "zz"], "not hex"),
        (["--measurement", "00" * 48, "--report-data", "00" * 65], "at most 64"),
        (["--measurement", "00" * 48, "--vmpl", "9"], "VMPL"),
    ],
)
def test_cli_simulate_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["snp", "simulate", "--state", str(tmp_path / "s"), "--out", str(tmp_path / "r")]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err


def test_load_rejects_swapped_vcek(tmp_path: Path, milan: SimulatedPlatform) -> None:
    copy = copy_state(milan, tmp_path / "copy")
    other = milan.vcek_certificate(TcbVersion(bootloader=1, tee=0, snp=1, microcode=1))
    (copy / "certs" / "vcek.der").write_bytes(other.public_bytes(Encoding.DER))
    with pytest.raises(MalformedError, match=r"vcek\.der does not match"):
        SimulatedPlatform.load(copy)


def test_cli_simulate_vlek_with_launch_artifacts(
    tmp_path: Path, milan: SimulatedPlatform, capsys: pytest.CaptureFixture[str]
) -> None:
    ovmf = require_debian_ovmf()
    state, out = copy_state(milan, tmp_path / "state"), tmp_path / "report.bin"
    argv = ["snp", "simulate", "--state", str(state), "--ovmf", str(ovmf), "--vcpus", "4"]
    assert main([*argv, "--vlek", "--report-version", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "--roots" in text and str(state / "roots") in text
    r = AttestationReport.from_bytes(out.read_bytes())
    assert r.product is Product.MILAN and r.version == 5
    assert r.signing_key is SigningKey.VLEK
    assert r.measurement == launch_measurement(LaunchArtifacts.from_files(ovmf, vcpus=4))
    vlek = x509.load_der_x509_certificate((tmp_path / "vlek.der").read_bytes())
    verify_report_signature(out.read_bytes(), vlek)
    chain = x509.load_pem_x509_certificates((tmp_path / "vlek_cert_chain.pem").read_bytes())
    assert [_cn(c.subject) for c in chain] == ["SEV-VLEK-Milan", "ARK-Milan"]


# --- round trips through the verifier (the simulated root trusted only explicitly) -------


NOW = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize("vlek", [False, True], ids=["vcek", "vlek"])
@pytest.mark.parametrize("version", [2, 3, 5])
def test_round_trip_verifies_with_simulated_roots(
    platform: SimulatedPlatform, vlek: bool, version: int
) -> None:
    report_data = os.urandom(64)
    raw = platform.report(
        report_data, measurement=MEASUREMENT, host_data=HOST_DATA, vlek=vlek, version=version
    )
    cert = platform.vlek if vlek else platform.vcek
    roots = TrustedRoots.from_dir(platform.roots_dir)
    verified = verify_report(
        raw, cert, platform.chain_pem(vlek=vlek), at=NOW, roots=roots, product=platform.product
    )
    assert verified.signing_key == ("vlek" if vlek else "vcek")
    assert verified.product is platform.product
    assert not verified.amd_root
    assert verified.report.report_data == report_data
    assert verified.report.measurement == MEASUREMENT
    # with the CRL, and with the chain taken from the roots directory alone
    crl = load_crl(platform.crl(now=NOW))
    verify_report(raw, cert, None, at=NOW, roots=roots, crl=crl)


@pytest.mark.parametrize("vlek", [False, True], ids=["vcek", "vlek"])
def test_simulated_report_fails_against_amd_roots(platform: SimulatedPlatform, vlek: bool) -> None:
    raw = platform.report(bytes(64), measurement=MEASUREMENT, vlek=vlek)
    cert = platform.vlek if vlek else platform.vcek
    with pytest.raises(VerificationError, match="not a trusted"):
        verify_report(raw, cert, platform.chain_pem(vlek=vlek), at=NOW)
    with pytest.raises(VerificationError, match="not a trusted"):
        verify_report(
            raw, cert, platform.chain_pem(vlek=vlek), at=NOW, roots=TrustedRoots.amd_default()
        )


def test_other_simulated_platform_is_not_trusted(
    milan: SimulatedPlatform, turin: SimulatedPlatform
) -> None:
    raw = turin.report(bytes(64), measurement=MEASUREMENT)
    with pytest.raises(VerificationError):
        verify_report(
            raw, turin.vcek, turin.chain_pem(), at=NOW, roots=TrustedRoots.from_dir(milan.roots_dir)
        )


def test_debug_policy_round_trip_through_appraisal(milan: SimulatedPlatform) -> None:
    roots = TrustedRoots.from_dir(milan.roots_dir)
    no_debug = AppraisalOptions(forbid_debug=True, allowed_measurements=frozenset({MEASUREMENT}))
    for debug in (False, True):
        raw = milan.report(
            bytes(64), measurement=MEASUREMENT, policy=GuestPolicy(smt=True, debug=debug)
        )
        verified = verify_report(raw, milan.vcek, milan.chain_pem(), at=NOW, roots=roots)
        assert verified.report.policy.debug is debug
        failures = appraise(verified.report, no_debug)
        assert bool(failures) is debug


def test_stale_vcek_after_tcb_change_is_rejected(tmp_path: Path, milan: SimulatedPlatform) -> None:
    sim = SimulatedPlatform.load(copy_state(milan, tmp_path / "s"))
    old_vcek = sim.vcek
    sim.set_tcb(reported=TcbVersion(bootloader=9, tee=0, snp=30, microcode=230))
    raw = sim.report(bytes(64), measurement=MEASUREMENT)
    roots = TrustedRoots.from_dir(sim.roots_dir)
    verify_report(raw, sim.vcek, sim.chain_pem(), at=NOW, roots=roots)
    with pytest.raises(VerificationError):
        verify_report(raw, old_vcek, sim.chain_pem(), at=NOW, roots=roots)


# --- CLI round trip: pmc2 snp simulate, then pmc2 snp verify ------------------------------


@pytest.mark.parametrize("vlek", [False, True], ids=["vcek", "vlek"])
def test_cli_simulate_then_verify(
    tmp_path: Path, platform: SimulatedPlatform, vlek: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    state = copy_state(platform, tmp_path / "state")
    out = tmp_path / "out" / "report.bin"
    argv = ["snp", "simulate", "--state", str(state), "--measurement", MEASUREMENT.hex()]
    argv += ["--host-data", HOST_DATA.hex(), "--report-data", "5a" * 64, "--debug"]
    argv += ["--out", str(out), "--json", *(["--vlek"] if vlek else [])]
    assert main(argv) == 0
    sim = json.loads(capsys.readouterr().out)
    verify = ["snp", "verify", sim["report"], "--cert", sim["cert"], "--chain", sim["chain"]]

    assert main([*verify, "--roots", sim["roots"], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["authentic"] is True
    assert doc["signing_key"] == ("vlek" if vlek else "vcek")
    assert doc["product"] == platform.product.value
    assert doc["report_version"] == 3
    assert doc["measurement"] == MEASUREMENT.hex()
    assert doc["host_data"] == HOST_DATA.hex()
    assert doc["report_data"] == "5a" * 64
    assert doc["chip_id"] == platform.chip_id.hex()
    assert doc["policy"]["debug"] is True
    assert doc["reported_tcb"] == platform.reported_tcb.components()
    assert doc["errors"] == []

    # not trusted by default: the pinned AMD roots reject the simulated ARK
    assert main([*verify, "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["authentic"] is False and doc["errors"]

    # authentic, but a no-debug appraisal policy rejects it
    policy = tmp_path / "policy.toml"
    policy.write_text(f'forbid_debug = true\nallowed_measurements = ["{MEASUREMENT.hex()}"]\n')
    assert main([*verify, "--roots", sim["roots"], "--policy", str(policy), "--json"]) == 4
    doc = json.loads(capsys.readouterr().out)
    assert doc["authentic"] is True and any("debug" in e.lower() for e in doc["errors"])
