from __future__ import annotations

from pathlib import Path

import pytest

from pmc2.cli import main
from tests._ovmf import require_debian_ovmf


def test_demo_runs_the_trust_bootstrap(
    tmp_path: Path, snp_vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ovmf = require_debian_ovmf()
    argv = ["demo", "--state", str(tmp_path / "sim"), "--ovmf", str(ovmf)]
    argv += ["--vectors", str(snp_vectors / "go-sev-guest-milan")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "appraisal   accepted" in out
    assert "debug guest   refused" in out
    assert "real Milan    authentic against AMD's pinned ARK: True; refused" in out
    assert "PMC2 demo passed" in out


def test_demo_without_firmware_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["demo", "--ovmf", str(tmp_path / "missing.fd")]) == 2
