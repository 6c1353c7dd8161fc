from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pmc2._demo import sample_photos
from pmc2._stack import write_tiny_bundle
from pmc2.cli import main
from tests._ovmf import require_debian_ovmf


def test_trust_walkthrough(
    tmp_path: Path, snp_vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ovmf = require_debian_ovmf()
    argv = ["demo", "--trust-only", "--state", str(tmp_path), "--ovmf", str(ovmf)]
    argv += ["--vectors", str(snp_vectors / "go-sev-guest-milan")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "appraisal   accepted" in out
    assert "debug guest   refused" in out
    assert "real Milan    authentic against AMD's pinned ARK: True; refused" in out
    assert "PMC2 demo passed" in out


def test_missing_firmware_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["demo", "--trust-only", "--ovmf", str(tmp_path / "missing.fd")]) == 2
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), "red").save(images / "red.png")
    assert main(["demo", "--images", str(images), "--ovmf", str(tmp_path / "no.fd")]) == 2


def test_sample_photos_ship_with_scikit_image() -> None:
    photos = sample_photos()
    assert photos[0].name == "chelsea.png"
    assert all(p.is_file() for p in photos)


def test_images_dir_must_hold_images(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no photos here")
    assert main(["demo", "--images", str(tmp_path)]) == 2
    assert main(["demo", "--images", str(tmp_path / "missing")]) == 2


def test_full_demo_classifies_through_the_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ovmf = require_debian_ovmf()
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(7)
    for name in ("a.png", "b.jpg"):
        pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / name)
    bundle = write_tiny_bundle(tmp_path / "bundle")
    argv = ["demo", "--images", str(images), "--state", str(tmp_path / "state")]
    argv += ["--bundle", str(bundle), "--ovmf", str(ovmf)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith(("a.png", "b.jpg"))]
    assert len(table) == 2
    # label, score, S1 bytes, S2 bytes and the stage timings are all filled in
    for row in table:
        cells = row.split()
        assert len(cells) == 13
        assert int(cells[3]) > 0 and float(cells[4]) > 0
    assert "PMC2 demo passed (stack stopped)" in out
