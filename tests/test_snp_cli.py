"""``pmc2 snp verify`` / ``show`` and ``pmc2 bench snp`` through ``pmc2.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from attestation import load_certificate
from pmc2.cli import main

VECTORS = Path(__file__).resolve().parent / "vectors" / "snp_chains"
AT = "2025-01-01T00:00:00Z"


@pytest.fixture
def milan(snp_vectors: Path) -> dict[str, Path]:
    d = snp_vectors / "go-sev-guest-milan"
    return {"report": d / "attestation.bin", "cert": d / "vcek.der", "chain": d / "ask_ark.pem"}


def _verify(m: dict[str, Path], *extra: str, report: Path | None = None) -> list[str]:
    return [
        "snp",
        "verify",
        str(report or m["report"]),
        "--cert",
        str(m["cert"]),
        "--chain",
        str(m["chain"]),
        "--at",
        AT,
        *extra,
    ]


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_verify_real_report(milan: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_verify(milan)) == 0
    assert "authentic: Milan report v2, signed by VCEK" in capsys.readouterr().out


def test_verify_json(milan: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_verify(milan, "--json")) == 0
    out = _json(capsys)
    assert out["authentic"] is True
    assert out["signing_key"] == "vcek"
    assert out["product"] == "Milan"
    assert out["report_version"] == 2
    assert str(out["measurement"]).startswith("b07af962")
    assert out["host_data"] == "00" * 32
    assert str(out["report_data"]).startswith("0102030405")
    assert str(out["chip_id"]).startswith("3ac3fe21")
    assert out["vmpl"] == 0
    assert out["reported_tcb"] == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
    policy = out["policy"]
    assert isinstance(policy, dict)
    assert policy["debug"] is True and policy["smt"] is True and policy["migrate_ma"] is False
    assert out["errors"] == []
    assert out["amd_root"] is True
    assert out["appraised"] is None


def test_no_debug_policy_rejects(
    milan: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text("forbid_debug = true\nvmpl = 0\n")
    assert main(_verify(milan, "--policy", str(policy), "--json")) == 4
    out = _json(capsys)
    assert out["authentic"] is True and out["appraised"] is False
    errors = out["errors"]
    assert isinstance(errors, list) and len(errors) == 1 and "POLICY.DEBUG" in errors[0]
    assert main(_verify(milan, "--policy", str(policy))) == 4
    assert "POLICY.DEBUG" in capsys.readouterr().err


def test_policy_file_errors(milan: dict[str, Path], tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text("forbid_debugging = true\n")
    assert main(_verify(milan, "--policy", str(policy))) == 2
    assert main(_verify(milan, "--policy", str(tmp_path / "missing.toml"))) == 2


def test_hex_report_and_pem_cert(milan: dict[str, Path], tmp_path: Path) -> None:
    hex_report = tmp_path / "report.hex"
    raw = milan["report"].read_bytes().hex()
    hex_report.write_text("\n".join(raw[i : i + 64] for i in range(0, len(raw), 64)) + "\n")
    pem = tmp_path / "vcek.pem"
    cert = load_certificate(milan["cert"].read_bytes())
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert main(_verify({**milan, "cert": pem}, report=hex_report)) == 0


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", bytes(0x4A0 - 1), bytes(0x4A0 + 1), b"abcd" * 10, b"zz" * 1184],
)
def test_malformed_reports(milan: dict[str, Path], tmp_path: Path, content: bytes) -> None:
    report = tmp_path / "r.bin"
    report.write_bytes(content)
    assert main(_verify(milan, report=report)) == 2


def test_truncated_real_report(milan: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "r.bin"
    report.write_bytes(milan["report"].read_bytes()[:-16])
    assert main(_verify(milan, report=report)) == 2


def test_not_authentic(
    milan: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = bytearray(milan["report"].read_bytes())
    raw[0x50] ^= 0xFF  # REPORT_DATA
    report = tmp_path / "r.bin"
    report.write_bytes(bytes(raw))
    assert main(_verify(milan, "--json", report=report)) == 3
    out = _json(capsys)
    assert out["authentic"] is False
    assert "signature does not verify" in str(out["errors"])
    # the unverified decode is still shown
    assert str(out["report_data"]).startswith("fe02")


def test_wrong_product_expired_and_bad_time(milan: dict[str, Path]) -> None:
    assert main(_verify(milan, "--product", "Genoa")) == 3
    assert main(_verify(milan, "--product", "Milan")) == 0
    assert main(_verify(milan, "--product", "Sapphire")) == 2
    assert main([*_verify(milan)[:-2], "--at", "2030-01-01"]) == 3
    assert main([*_verify(milan)[:-2], "--at", "yesterday"]) == 2


def test_missing_files(milan: dict[str, Path], tmp_path: Path) -> None:
    assert main(_verify({**milan, "cert": tmp_path / "none.der"})) == 2
    assert main(_verify({**milan, "chain": tmp_path / "none.pem"})) == 2
    assert main(_verify(milan, report=tmp_path / "none.bin")) == 2
    assert main(_verify(milan, "--roots", str(tmp_path / "none"))) == 2


def test_missing_chain_is_not_authentic(milan: dict[str, Path]) -> None:
    args = ["snp", "verify", str(milan["report"]), "--cert", str(milan["cert"]), "--at", AT]
    assert main(args) == 3


def test_explicit_roots(capsys: pytest.CaptureFixture[str]) -> None:
    base = [
        "snp",
        "verify",
        str(VECTORS / "report_vcek.bin"),
        "--cert",
        str(VECTORS / "vcek.pem"),
        "--at",
        "2025-06-01",
        "--json",
    ]
    assert main(base) == 3  # AMD roots do not trust the test ARK
    capsys.readouterr()
    assert main([*base, "--roots", str(VECTORS / "roots")]) == 0
    out = _json(capsys)
    assert out["amd_root"] is False and out["roots"] == "dir:roots"
    crl = ["--roots", str(VECTORS / "roots"), "--crl", str(VECTORS / "crl_revoked.der")]
    assert main([*base, *crl]) == 3
    assert "revoked" in str(_json(capsys)["errors"])


def test_vlek_via_cli(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "snp",
        "verify",
        str(VECTORS / "report_vlek.bin"),
        "--cert",
        str(VECTORS / "vlek.pem"),
        "--chain",
        str(VECTORS / "vlek_chain.pem"),
        "--roots",
        str(VECTORS / "roots"),
        "--at",
        "2025-06-01",
        "--json",
    ]
    assert main(args) == 0
    assert _json(capsys)["signing_key"] == "vlek"


def test_show(milan: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snp", "show", str(milan["report"]), "--product", "milan"]) == 0
    text = capsys.readouterr().out
    assert "measurement" in text and "b07af962" in text and "debug=True" in text
    assert main(["snp", "show", str(milan["report"]), "--product", "milan", "--json"]) == 0
    out = _json(capsys)
    assert out["version"] == 2 and out["current_version"] == "1.49.3"
    assert main(["snp", "show", str(milan["report"])]) == 2
    assert "--product" in capsys.readouterr().err
    assert main(["snp", "show", str(VECTORS / "report_vcek.bin")]) == 0  # v3 names itself


def test_bench(milan: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "bench" / "snp.json"
    args = ["bench", "snp", "--iterations", "3", "--json", str(out_file)]
    assert main([*args, "--vectors", str(milan["report"].parent)]) == 0
    result = json.loads(out_file.read_text())
    assert result["iterations"] == 3 and result["ms_mean"] > 0
    assert json.loads(capsys.readouterr().out)["benchmark"] == "snp-verify"
    assert main([*args, "--vectors", str(tmp_path)]) == 2
