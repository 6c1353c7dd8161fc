"""``pmc2 admin ...`` and ``pmc2 bench attest`` (the parser is built from ``_admin_cli``)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from attestation import _admin_cli, load_operator_private_key
from attestation._admin_cli import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TRANSPORT,
    EXIT_TRUST,
    parse_expiry,
)
from tests._service_support import (
    MEASUREMENT,
    Env,
    close_env,
    launch_config,
    open_env,
    platform,
)

REPO = Path(__file__).resolve().parent.parent


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pmc2")
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("bench").add_subparsers(dest="bench")
    _admin_cli.register(sub, bench)
    args = parser.parse_args(list(argv))
    code: int = args.handler(args)
    return code


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[tuple[Env, Path]]:
    """A service over ASGI whose operator key is in a file, and the CLI pointed at it."""
    key_file = tmp_path / "operator.key"
    assert run("admin", "keygen", "--out", str(key_file)) == EXIT_OK
    operator = load_operator_private_key(key_file)
    env = open_env(tmp_path / "state", operator=operator)
    _admin_cli._transport_override = env.transport
    try:
        yield env, key_file
    finally:
        _admin_cli._transport_override = None
        close_env(env)


def client_args(key_file: Path) -> list[str]:
    return ["--url", "http://testserver", "--key", str(key_file)]


def test_keygen_writes_private_and_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "op.key"
    assert run("admin", "keygen", "--out", str(out)) == EXIT_OK
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pub = serialization.load_pem_public_key((tmp_path / "op.key.pub").read_bytes())
    assert pub is not None
    assert "key id:" in capsys.readouterr().out
    assert run("admin", "keygen", "--out", str(out)) == EXIT_BAD_INPUT


def test_register_list_revoke(
    cli_env: tuple[Env, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env, key = cli_env
    config_file = tmp_path / "launch.toml"
    config_file.write_text(launch_config().to_toml())
    code = run(
        "admin",
        "register",
        "--measurement",
        MEASUREMENT.hex(),
        "--label",
        "enclave v1",
        "--launch-config",
        str(config_file),
        "--expires",
        "30d",
        *client_args(key),
    )
    assert code == EXIT_OK
    assert "registered #1" in capsys.readouterr().out
    assert run("admin", "list", "--json", *client_args(key)) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["host_data"] == launch_config().host_data().hex()
    assert listed[0]["expires"] is not None
    assert run("admin", "list", *client_args(key)) == EXIT_OK
    assert "active" in capsys.readouterr().out
    result, _ = env.attest()
    assert result.measurement == MEASUREMENT
    assert run("admin", "revoke", "1", *client_args(key)) == EXIT_OK
    assert run("admin", "revoke", "7", *client_args(key)) == EXIT_REFUSED


def test_register_from_launch_template_with_bundle_digest(
    cli_env: tuple[Env, Path], tmp_path: Path
) -> None:
    from policies import default_text

    env, key = cli_env
    template = tmp_path / "template.toml"
    template.write_text(default_text("launch_config"))
    args = ["admin", "register", "--measurement", MEASUREMENT.hex(), "--label", "t"]
    assert run(*args, "--launch-config", str(template), *client_args(key)) == EXIT_BAD_INPUT
    code = run(
        *args,
        "--launch-config",
        str(template),
        "--bundle-digest",
        "sha256:" + "11" * 32,
        *client_args(key),
    )
    assert code == EXIT_OK
    assert env.admin.reference_values()[0]["host_data"] == launch_config().host_data().hex()


def test_policy_set_show_and_invalid(
    cli_env: tuple[Env, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _env, key = cli_env
    assert run("admin", "policy", "show", "appraisal", *client_args(key)) == EXIT_OK
    assert "shipped default" in capsys.readouterr().out
    good = tmp_path / "kr.toml"
    good.write_text(
        'schema = "pmc2/key-release/v1"\n[[rules]]\nresource = "a"\nany_attested = true\n'
    )
    assert run("admin", "policy", "set", "key-release", str(good), *client_args(key)) == EXIT_OK
    assert "digest" in capsys.readouterr().out
    assert run("admin", "policy", "show", "key-release", "--json", *client_args(key)) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["default"] is False
    bad = tmp_path / "bad.toml"
    bad.write_text('schema = "pmc2/key-release/v1"\nbogus = 1\n')
    assert run("admin", "policy", "set", "key-release", str(bad), *client_args(key)) == EXIT_REFUSED
    assert "bogus" in capsys.readouterr().err
    missing = str(tmp_path / "missing.toml")
    assert run("admin", "policy", "set", "appraisal", missing, *client_args(key)) == EXIT_BAD_INPUT


def test_resources_audit_and_key_rotation(
    cli_env: tuple[Env, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env, key = cli_env
    value = tmp_path / "secret.bin"
    value.write_bytes(b"s3cr3t-bytes")
    c = client_args(key)
    assert run("admin", "resource", "put", "model-bundle-key", "--value-file", str(value), *c) == 0
    assert run("admin", "resource", "put", "cloud-credential", "--generate", "48", *c) == 0
    assert run("admin", "resource", "rotate", "cloud-credential", *c) == EXIT_OK
    assert run("admin", "resource", "put", "x", *c) == EXIT_BAD_INPUT
    capsys.readouterr()
    assert run("admin", "resource", "list", *c) == EXIT_OK
    out = capsys.readouterr().out
    assert "cloud-credential" in out and "version 2" in out
    assert "s3cr3t" not in out
    assert run("admin", "signing-key", "rotate", *c) == EXIT_OK
    assert "kid" in capsys.readouterr().out
    assert run("admin", "audit", *c) == EXIT_OK
    out = capsys.readouterr().out
    assert "admin.resource.put" in out and "hash chain intact" in out
    assert "s3cr3t" not in out
    env.register()
    result, key_pair = env.attest()
    assert env.client.resource("model-bundle-key", result.token, key_pair) == b"s3cr3t-bytes"


def test_exit_codes_trust_transport_and_input(cli_env: tuple[Env, Path], tmp_path: Path) -> None:
    _env, key = cli_env
    other = tmp_path / "other.key"
    assert run("admin", "keygen", "--out", str(other)) == EXIT_OK
    assert run("admin", "list", *client_args(other)) == EXIT_TRUST
    assert (
        run("admin", "register", "--measurement", "zz", "--label", "x", *client_args(key))
        == EXIT_BAD_INPUT
    )
    assert run("admin", "register", "--label", "x", *client_args(key)) == EXIT_BAD_INPUT
    assert run("admin", "list", "--url", "http://testserver") in (EXIT_BAD_INPUT,)
    _admin_cli._transport_override = None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = run(
        "admin", "list", "--url", f"http://127.0.0.1:{port}", "--key", str(key), "--timeout", "2"
    )
    assert code == EXIT_TRANSPORT


def test_parse_expiry() -> None:
    import datetime as dt

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_expiry("30d", now) == int(now.timestamp()) + 30 * 86400
    assert parse_expiry("2026-02-01T00:00:00Z", now) == int(
        dt.datetime(2026, 2, 1, tzinfo=dt.UTC).timestamp()
    )
    from attestation import MalformedError

    for bad in ("soon", "2026-02-01T00:00:00", "10y"):
        with pytest.raises(MalformedError):
            parse_expiry(bad, now)


def test_measure_and_register_from_ovmf(
    cli_env: tuple[Env, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from attestation import LaunchArtifacts, launch_measurement
    from tests._ovmf import require_debian_ovmf

    ovmf = require_debian_ovmf()
    env, key = cli_env
    assert run("admin", "measure", "--ovmf", str(ovmf), "--vcpus", "2") == EXIT_OK
    printed = capsys.readouterr().out.strip()
    expected = launch_measurement(LaunchArtifacts.from_files(ovmf, vcpus=2))
    assert printed == expected.hex()
    code = run(
        "admin", "register", "--ovmf", str(ovmf), "--vcpus", "2", "--label", "fw", *client_args(key)
    )
    assert code == EXIT_OK
    assert env.admin.reference_values()[0]["measurement"] == expected.hex()


def test_bench_attest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = run(
        "bench",
        "attest",
        "--iterations",
        "8",
        "--warmup",
        "1",
        "--verify-seconds",
        "0.2",
        "--platform",
        str(platform().state_dir),
        "--json",
        str(out),
    )
    assert code == EXIT_OK
    doc = json.loads(out.read_text())
    e2e = doc["end_to_end_ms"]
    assert 0 < e2e["p50"] <= e2e["p99"]
    assert doc["verification"]["per_second_per_core"] > 0
    assert "p99" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_runs_uvicorn(tmp_path: Path) -> None:
    key = tmp_path / "op.key"
    assert run("admin", "keygen", "--out", str(key)) == EXIT_OK
    port = _free_port()
    script = (
        "import argparse, sys\n"
        "from attestation import _admin_cli\n"
        "p = argparse.ArgumentParser(); s = p.add_subparsers()\n"
        "_admin_cli.register(s, s.add_parser('bench').add_subparsers())\n"
        "a = p.parse_args(sys.argv[1:]); sys.exit(a.handler(a))\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            script,
            "admin",
            "serve",
            "--state",
            str(tmp_path / "state"),
            "--operator-key",
            f"{key}.pub",
            "--port",
            str(port),
            "--no-kds",
            "--insecure-roots",
            str(platform().roots_dir),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        answer: Any = None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        assert answer is not None and answer.status_code == 200, proc.poll()
        jwks = httpx.get(f"http://127.0.0.1:{port}/.well-known/jwks.json").json()
        assert jwks["keys"][0]["alg"] == "ES384"
        code = run("admin", "list", "--url", f"http://127.0.0.1:{port}", "--key", str(key))
        assert code == EXIT_OK
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0].decode()
    assert "trusts the explicitly configured roots" in output
