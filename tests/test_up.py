"""``pmc2 up`` itself: the real command with its services as child processes (one run:
start, a client classifies through it, SIGTERM stops everything and exits 0), its
refusals (a taken port, no bundle), children that die with their parent, a state
directory reused, and the small pieces (ports, the tiny bundle)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client import Client, ClientConfig, Expectations, JwksPin
from pmc2._stack import (
    DEFAULT_PORTS,
    Ports,
    StackError,
    check_ports_free,
    free_ports,
    write_tiny_bundle,
)
from tests import _e2e_support as e2e
from tests._ovmf import require_debian_ovmf
from vision import manifest_digest

pytestmark = pytest.mark.filterwarnings(
    "ignore::attestation.InsecureRootsWarning", "ignore::client.InsecureClientWarning"
)

REPO = Path(__file__).resolve().parent.parent


def _up(state: Path, ports: list[int], *extra: str) -> list[str]:
    gateway, attestation, cloud, enclave = ports
    return [
        sys.executable,
        "-m",
        "pmc2.cli",
        "up",
        "--state",
        str(state),
        "--gateway-port",
        str(gateway),
        "--attestation-port",
        str(attestation),
        "--cloud-port",
        str(cloud),
        "--enclave-port",
        str(enclave),
        *extra,
    ]


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in status  # a zombie waiting for a reaper is dead too


def test_pmc2_up_starts_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    require_debian_ovmf()
    state = tmp_path / "state"
    state.mkdir()
    shutil.copytree(e2e.platform_template(), state / "platform")
    ports = free_ports(4)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*_up(state, ports, "--bundle", str(e2e.tiny_bundle())), "--startup-timeout", "240"],
            stdout=stdout,
            stderr=stderr,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C" not in out.read_text():
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, err.read_text()[-3000:]
            time.sleep(0.3)
        summary = out.read_text()
        info = json.loads((state / "client.json").read_text())
        assert info["gateway_url"] == f"http://127.0.0.1:{ports[0]}"
        for value in (info["gateway_url"], info["attestation_url"], info["measurement"]):
            assert value in summary
        assert info["launch_config_digest"] in summary
        assert info["jwks_thumbprints"][0] in summary
        # the insecure roots are said out loud, by pmc2 up and by the service's own log
        assert "WARNING" in err.read_text() and "WARNING" in summary
        assert "instead of AMD's" in (state / "logs" / "attestation.log").read_text()
        # a client attests and classifies through the running processes
        config = ClientConfig(
            gateway_url=info["gateway_url"],
            attestation_url=info["attestation_url"],
            jwks_pin=JwksPin(thumbprints=info["jwks_thumbprints"]),
            expect=Expectations(
                measurements=[info["measurement"]],
                launch_config_digests=[info["launch_config_digest"]],
                allow_insecure_simulated_platform=True,
            ),
        )
        with Client(config) as client:
            (result,) = client.classify([e2e.jpeg(5)])
        assert result.label_name is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, err.read_text()[-3000:]
    assert "stopped" in err.read_text()
    check_ports_free("127.0.0.1", dict(zip("gace", ports, strict=True)))  # all released


def test_pmc2_up_reports_a_service_that_fails_to_start(tmp_path: Path) -> None:
    require_debian_ovmf()
    state = tmp_path / "state"
    state.mkdir()
    shutil.copytree(e2e.platform_template(), state / "platform")
    ports = free_ports(4)
    # a batch larger than the egress policy's images per second: the enclave's boot
    # step 1 refuses the configuration
    result = subprocess.run(
        _up(state, ports, "--bundle", str(e2e.tiny_bundle()), "--max-batch", "6000", "--quiet"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "enclave did not start" in result.stderr
    assert "boot step 1 (check the launch configuration) failed" in result.stderr
    check_ports_free("127.0.0.1", dict(zip("gace", ports, strict=True)))  # nothing left


def test_pmc2_up_refuses_a_taken_port(tmp_path: Path) -> None:
    ports = free_ports(4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[2]))
        taken.listen()
        started = time.monotonic()
        result = subprocess.run(
            _up(tmp_path / "state", ports, "--bundle", str(e2e.tiny_bundle())),
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert f"port {ports[2]} (cloud)" in result.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "state").exists()  # refused before touching anything


def test_pmc2_up_needs_a_bundle(tmp_path: Path) -> None:
    result = subprocess.run(
        _up(tmp_path / "state", free_ports(4), "--bundle", str(tmp_path / "nothing")),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "no model bundle" in result.stderr and "--tiny-bundle" in result.stderr


def test_children_die_with_their_parent(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    # a parent that starts a long-running pmc2 command through pmc2._child, then waits
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-m', 'pmc2._child', str(os.getpid()),"
            f" 'gateway', 'serve', '--replica', 'http://127.0.0.1:9', '--port', '{port}'])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 60
    while True:  # the child serves
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and not _gone(child)
            time.sleep(0.2)
    parent.kill()  # SIGKILL: no chance to clean up
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 30
    while not _gone(child):
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.2)


def test_child_refuses_a_foreign_parent() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pmc2._child", "1", "--version"],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 143  # its parent is not pid 1: it died before running


def test_state_directory_is_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = e2e.in_process_stack(state)
    try:
        info = first.client_info()
    finally:
        first.stop()
    lines: list[str] = []
    again = e2e.in_process_stack(state, progress=lines.append, ports=first.options.ports)
    try:
        assert again.client_info()["jwks_thumbprints"] == info["jwks_thumbprints"]
        assert (
            again.client_info()["internal"]["registration_id"]
            == (info["internal"]["registration_id"])
        )
        assert any("already in place" in line for line in lines)
        assert any("(reused)" in line for line in lines)
    finally:
        again.stop()


def test_ports() -> None:
    assert DEFAULT_PORTS.as_dict() == {
        "gateway": 8400,
        "attestation": 8401,
        "cloud": 8402,
        "enclave": 8403,
    }
    assert Ports.from_base(9000) == Ports(9000, 9001, 9002, 9003)
    with pytest.raises(ValueError, match="differ"):
        Ports(9000, 9000, 9002, 9003)
    with pytest.raises(ValueError, match=r"1\.\.65535"):
        Ports(0, 9001, 9002, 9003)
    ports = free_ports(6)
    assert len(set(ports)) == 6
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports[0]))
        held.listen()
        with pytest.raises(StackError, match=f"port {ports[0]} \\(gateway\\)"):
            check_ports_free("127.0.0.1", {"gateway": ports[0]})


def test_tiny_bundle_is_deterministic(tmp_path: Path) -> None:
    one = write_tiny_bundle(tmp_path / "one")
    two = write_tiny_bundle(tmp_path / "two")
    assert manifest_digest(one) == manifest_digest(two) == manifest_digest(e2e.tiny_bundle())
    assert write_tiny_bundle(one) == one  # an existing bundle is kept
    assert os.stat(one / "manifest.json").st_size > 0
