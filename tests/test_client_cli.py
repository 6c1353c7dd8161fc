"""``pmc2 classify`` against the in-process stack: output, JSON, and exit statuses
(0 ok, 2 bad input, 3 attestation or policy failure, 4 refused, 5 transport, 6 protocol)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from client._cli import (
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_REFUSED,
    EXIT_TRANSPORT,
    EXIT_TRUST,
    EXIT_USAGE,
    register,
    run_classify,
)
from tests import _enclave_support as es
from tests import _service_support as svc
from tests.test_client import (
    ATTEST,
    GATEWAY,
    Harness,
    Recorder,
    SyncTransport,
    _garbage,
    _unavailable,
    _unreachable,
    harness,
)

__all__ = ["harness"]  # the module-scoped stack fixture, shared with test_client


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmc2")
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("bench").add_subparsers(dest="bench")
    register(sub, bench)
    return parser


@pytest.fixture
def images(tmp_path: Path) -> list[str]:
    paths = []
    for seed in range(2):
        path = tmp_path / f"photo-{seed}.jpg"
        path.write_bytes(es.jpeg(seed=seed + 30))
        paths.append(str(path))
    return paths


def _pins(h: Harness) -> list[str]:
    out: list[str] = []
    for thumbprint in h.thumbprints():
        out += ["--jwks-pin", thumbprint]
    return out


def run(
    h: Harness,
    argv: list[str],
    recorder: Recorder | None = None,
    *,
    pins: bool = True,
) -> tuple[int, Recorder]:
    recorder = recorder or Recorder(h.apps)
    full = ["classify", *argv, "--gateway", GATEWAY, "--attestation", ATTEST]
    full += ["--insecure-simulated-platform"]
    if pins:
        full += _pins(h)
    args = _parser().parse_args(full)
    code = run_classify(args, transport=SyncTransport(recorder, h.portal))
    return code, recorder


def test_classify_prints_labels_bytes_and_latency(
    harness: Harness, images: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, recorder = run(harness, [*images, "--expect-measurement", svc.MEASUREMENT.hex()])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    out = captured.out
    assert f"attested  enclave key {harness.enclave.key_pair.key_id.hex} (HPKE-3)" in out
    assert "NOT an AMD root" in out
    for path in images:
        assert f"{path}: class-" in out
    assert out.count("sent JPEG") == 2 and out.count("latency") == 2
    assert "perturb" in out and "round trip" in out
    assert "simulated platform" in captured.err  # the insecure option warns
    assert recorder.infers() == 2


def test_classify_json(
    harness: Harness, images: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    egress = tmp_path / "egress.toml"
    egress.write_text(harness.stack.egress.to_toml())
    launch = tmp_path / "launch.toml"
    launch.write_text(harness.stack.launch.to_toml())
    argv = [*images, "--json", "--expect-egress-policy", str(egress)]
    argv += ["--expect-launch-config", str(launch), "--fresh-nonce", "--top-k", "2"]
    argv += ["--quality", "80", "--max-side", "0"]
    code, _ = run(harness, argv)
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK and doc["exit_status"] == 0
    assert doc["attestation"]["fresh"] is True
    assert doc["attestation"]["egress_policy_digest"] == harness.stack.egress.digest().hex()
    assert [r["source"] for r in doc["results"]] == images
    for result in doc["results"]:
        assert len(result["scores"]) == 2
        assert result["bytes_sent"]["jpeg"] > 0 and result["bytes_sent"]["envelope"] > 0
        assert "perturb" in result["timings"]["server_ms"]


def test_pin_from_environment_and_file(
    harness: Harness,
    images: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PMC2_JWKS_PIN", ",".join(harness.thumbprints()))
    assert run(harness, images[:1], pins=False)[0] == EXIT_OK
    monkeypatch.delenv("PMC2_JWKS_PIN")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(harness.stack.env.client.jwks()))
    code, recorder = run(harness, [*images[:1], "--jwks-file", str(jwks)], pins=False)
    assert code == EXIT_OK
    assert not any("jwks.json" in s.url for s in recorder.seen)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("name", "argv", "tamper", "code", "message"),
    [
        ("pin mismatch", ["--jwks-pin", ECKey.generate_key("P-384").thumbprint()], None,
         EXIT_TRUST, "matches the pin"),
        ("measurement", ["--expect-measurement", svc.OTHER_MEASUREMENT.hex()], None,
         EXIT_TRUST, "measurement not accepted"),
        ("egress digest", ["--expect-egress-digest", "00" * 48], None,
         EXIT_TRUST, "egress policy digest not accepted"),
        ("suite", ["--suite", "HPKE-9"], None, EXIT_TRUST, "HPKE suite not accepted"),
        ("refused", [], _unavailable, EXIT_REFUSED, "no-attested-replica"),
        ("unreachable", [], _unreachable, EXIT_TRANSPORT, "transport failure"),
        ("garbage", [], _garbage, EXIT_PROTOCOL, "protocol violation"),
    ],
)  # fmt: skip
def test_exit_statuses(
    harness: Harness,
    images: list[str],
    capsys: pytest.CaptureFixture[str],
    name: str,
    argv: list[str],
    tamper: Any,
    code: int,
    message: str,
) -> None:
    pins = name != "pin mismatch"
    recorder = Recorder(harness.apps, tamper)
    got, _ = run(harness, [*images, *argv], recorder, pins=pins)
    assert got == code
    assert message in capsys.readouterr().err
    recorder.assert_no_image_sent([Path(p).read_bytes() for p in images])


def test_bad_input_is_a_usage_error(
    harness: Harness, images: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder = Recorder(harness.apps)
    assert run(harness, [str(tmp_path / "absent.jpg")], recorder)[0] == EXIT_USAGE
    assert "no such image file" in capsys.readouterr().err
    assert run(harness, images, recorder, pins=False)[0] == EXIT_USAGE
    assert "pin the attestation service's keys" in capsys.readouterr().err
    assert run(harness, [*images, "--expect-measurement", "zz"], recorder)[0] == EXIT_USAGE
    assert run(harness, [*images, "--quality", "0"], recorder)[0] == EXIT_USAGE
    assert recorder.seen == []  # nothing was asked of any server
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("hello")
    code, recorder = run(harness, [str(not_an_image)])
    assert code == EXIT_USAGE and recorder.infers() == 0
    assert "not a readable image" in capsys.readouterr().err


def test_help_mentions_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["classify", "--help"])
    out = capsys.readouterr().out
    assert "3 attestation or policy failure" in out and "--jwks-pin" in out


def test_transport_is_the_network_by_default(harness: Harness, images: list[str]) -> None:
    # without an injected transport the client really dials (an unroutable test name)
    args = _parser().parse_args(
        ["classify", *images, "--gateway", "http://gateway.invalid:9", "--timeout", "2",
         *_pins(harness)]
    )  # fmt: skip
    assert run_classify(args) == EXIT_TRANSPORT
