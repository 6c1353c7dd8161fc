"""Launch measurement with sev-snp-measure over Debian's OVMF and a synthetic AmdSev image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attestation._errors import MalformedError
from attestation._measure import (
    LaunchArtifacts,
    VmmType,
    firmware_info,
    launch_measurement,
    vcpu_types,
)
from pmc2.cli import main
from tests._ovmf import OVMF_CODE_4M, require_debian_ovmf, write_amdsev_like_firmware

SEV_SNP_MEASURE = Path(sys.executable).parent / "sev-snp-measure"


def cli_measure(ovmf: Path, *extra: str, vcpus: int = 1, vcpu_type: str = "EPYC-v4") -> bytes:
    """The sev-snp-measure command-line tool's answer for the same inputs."""
    if not SEV_SNP_MEASURE.exists():
        pytest.fail(f"{SEV_SNP_MEASURE} missing (sev-snp-measure is a dependency)")
    out = subprocess.run(
        [
            str(SEV_SNP_MEASURE),
            "--mode",
            "snp",
            "--vcpus",
            str(vcpus),
            "--vcpu-type",
            vcpu_type,
            "--ovmf",
            str(ovmf),
            *extra,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return bytes.fromhex(out.stdout.strip())


@pytest.fixture
def ovmf() -> Path:
    return require_debian_ovmf()


@pytest.fixture
def amdsev(tmp_path: Path) -> Path:
    return write_amdsev_like_firmware(tmp_path / "amdsev.fd")


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    p = tmp_path / "vmlinuz"
    p.write_bytes(b"\x7fkernel image" * 1000)
    return p


@pytest.fixture
def initrd(tmp_path: Path) -> Path:
    p = tmp_path / "initrd.img"
    p.write_bytes(b"initrd" * 500)
    return p


# --- Debian's OVMF_CODE.fd: firmware-only launches ---------------------------------------


def test_debian_ovmf_has_snp_metadata_without_kernel_hashes(ovmf: Path) -> None:
    info = firmware_info(ovmf)
    assert info.has_sev_metadata
    assert {"SNP_SECRETS", "CPUID", "SNP_SEC_MEM"} <= set(info.sections)
    assert not info.kernel_hashes


def test_measurement_is_48_bytes_and_deterministic(ovmf: Path) -> None:
    a = LaunchArtifacts.from_files(ovmf, vcpus=1)
    m1 = launch_measurement(a)
    m2 = launch_measurement(LaunchArtifacts.from_files(ovmf, vcpus=1))
    assert len(m1) == 48
    assert m1 == m2


@pytest.mark.parametrize("vcpus", [1, 4])
def test_matches_command_line_tool(ovmf: Path, vcpus: int) -> None:
    a = LaunchArtifacts.from_files(ovmf, vcpus=vcpus)
    assert launch_measurement(a) == cli_measure(ovmf, vcpus=vcpus)


def test_changes_with_vcpu_count_type_and_features(ovmf: Path) -> None:
    base = launch_measurement(LaunchArtifacts.from_files(ovmf, vcpus=1))
    four = launch_measurement(LaunchArtifacts.from_files(ovmf, vcpus=4))
    milan = launch_measurement(LaunchArtifacts.from_files(ovmf, vcpu_type="EPYC-Milan"))
    feats = launch_measurement(LaunchArtifacts.from_files(ovmf, guest_features=0x21))
    assert len({base, four, milan, feats}) == 4
    assert milan == cli_measure(ovmf, vcpu_type="EPYC-Milan")


def test_kernel_rejected_without_kernel_hashes_section(ovmf: Path, kernel: Path) -> None:
    a = LaunchArtifacts.from_files(ovmf, kernel=kernel, append="console=ttyS0")
    with pytest.raises(MalformedError, match="SNP_KERNEL_HASHES"):
        launch_measurement(a)


def test_firmware_without_sev_metadata_rejected() -> None:
    fw = require_debian_ovmf(OVMF_CODE_4M)
    assert not firmware_info(fw).has_sev_metadata
    with pytest.raises(MalformedError, match="no SEV metadata"):
        launch_measurement(LaunchArtifacts.from_files(fw))


# --- direct kernel boot, on the synthetic AmdSev-like image ------------------------------


def test_kernel_initrd_cmdline_change_measurement(
    amdsev: Path, kernel: Path, initrd: Path, tmp_path: Path
) -> None:
    other_kernel = tmp_path / "vmlinuz2"
    other_kernel.write_bytes(kernel.read_bytes() + b"!")
    fw_only = launch_measurement(LaunchArtifacts.from_files(amdsev))
    k = launch_measurement(LaunchArtifacts.from_files(amdsev, kernel=kernel))
    k2 = launch_measurement(LaunchArtifacts.from_files(amdsev, kernel=other_kernel))
    ki = launch_measurement(LaunchArtifacts.from_files(amdsev, kernel=kernel, initrd=initrd))
    kc = launch_measurement(LaunchArtifacts.from_files(amdsev, kernel=kernel, append="quiet"))
    kc2 = launch_measurement(LaunchArtifacts.from_files(amdsev, kernel=kernel, append="quiet1"))
    assert len({fw_only, k, k2, ki, kc, kc2}) == 6


def test_kernel_boot_matches_command_line_tool(amdsev: Path, kernel: Path, initrd: Path) -> None:
    a = LaunchArtifacts.from_files(
        amdsev, kernel=kernel, initrd=initrd, append="console=ttyS0 quiet", vcpus=2
    )
    expected = cli_measure(
        amdsev,
        "--kernel",
        str(kernel),
        "--initrd",
        str(initrd),
        "--append",
        "console=ttyS0 quiet",
        vcpus=2,
    )
    assert launch_measurement(a) == expected


def test_vmm_types_differ(amdsev: Path) -> None:
    q = launch_measurement(LaunchArtifacts.from_files(amdsev, vmm=VmmType.QEMU))
    e = launch_measurement(LaunchArtifacts.from_files(amdsev, vmm=VmmType.EC2))
    assert q != e
    assert VmmType.parse("qemu") is VmmType.QEMU


# --- validation and record --------------------------------------------------------------


def test_artifacts_record_digests(amdsev: Path, kernel: Path) -> None:
    a = LaunchArtifacts.from_files(amdsev, kernel=kernel, append="x", vcpus=3)
    record = a.to_json()
    assert record["ovmf"]["sha256"] == a.ovmf.sha256.hex()
    assert record["ovmf"]["size"] == amdsev.stat().st_size
    assert record["kernel"]["path"] == str(kernel)
    assert record["vcpus"] == 3
    assert record["vcpu_sig"] == "0x800f12"
    json.dumps(record)


def test_file_changed_after_recording_is_rejected(amdsev: Path, kernel: Path) -> None:
    a = LaunchArtifacts.from_files(amdsev, kernel=kernel)
    kernel.write_bytes(b"swapped")
    with pytest.raises(MalformedError, match="changed"):
        launch_measurement(a)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vcpus": 0}, "vcpus"),
        ({"vcpu_type": "Pentium"}, "vCPU type"),
        ({"append": "quiet"}, "needs a kernel"),
        ({"guest_features": 1 << 64}, "64 bits"),
    ],
)
def test_invalid_parameters(amdsev: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MalformedError, match=message):
        LaunchArtifacts.from_files(amdsev, **kwargs)  # type: ignore[arg-type]


def test_missing_or_garbage_firmware(tmp_path: Path) -> None:
    with pytest.raises(MalformedError, match="cannot read"):
        LaunchArtifacts.from_files(tmp_path / "nope.fd")
    junk = tmp_path / "junk.fd"
    junk.write_bytes(bytes(4096))
    with pytest.raises(MalformedError, match="no SEV metadata"):
        launch_measurement(LaunchArtifacts.from_files(junk))
    odd = tmp_path / "odd.fd"
    odd.write_bytes(bytes(1000))
    with pytest.raises(MalformedError, match="4 KiB pages"):
        launch_measurement(LaunchArtifacts.from_files(odd))


def test_vcpu_types_listed() -> None:
    assert {"EPYC-v4", "EPYC-Milan", "EPYC-Genoa"} <= set(vcpu_types())


# --- CLI -----------------------------------------------------------------------------------


def test_cli_measure_hex(ovmf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snp", "measure", "--ovmf", str(ovmf), "--vcpus", "4"]) == 0
    out = capsys.readouterr().out.strip()
    assert bytes.fromhex(out) == cli_measure(ovmf, vcpus=4)


def test_cli_measure_json(amdsev: Path, kernel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["snp", "measure", "--ovmf", str(amdsev), "--kernel", str(kernel)]
    assert main([*argv, "--append", "ro", "--vcpu-type", "EPYC-Genoa", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    a = LaunchArtifacts.from_files(amdsev, kernel=kernel, append="ro", vcpu_type="EPYC-Genoa")
    assert doc["measurement"] == launch_measurement(a).hex()
    assert doc["artifacts"]["kernel"]["sha256"] == a.kernel.sha256.hex()  # type: ignore[union-attr]


def test_cli_measure_bad_input_exit_2(
    tmp_path: Path, ovmf: Path, kernel: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["snp", "measure", "--ovmf", str(tmp_path / "missing.fd")]) == 2
    assert main(["snp", "measure", "--ovmf", str(ovmf), "--kernel", str(kernel)]) == 2
    assert "SNP_KERNEL_HASHES" in capsys.readouterr().err
