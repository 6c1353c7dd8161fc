"""The whole PMC2 system on loopback: what ``pmc2 up`` and ``pmc2 bench latency`` start.

:class:`DevStack` brings up, in this order, on one host (default ``127.0.0.1``):

1. **Host and operator files** in the state directory (created, or reused when it
   exists): the simulated SEV-SNP platform (``STATE/platform``, an AMD-like ARK → ASK →
   VCEK chain generated once), the operator's Ed25519 key (``STATE/operator.key``), the
   cloud credential (``STATE/cloud/credential``) and the model-bundle key
   (``STATE/enclave/bundle.key``), all 0600.
2. **The attestation service** (``pmc2 admin serve``) trusting the simulated platform's
   root *explicitly* (``--insecure-roots``: development only; it logs a warning and its
   tokens carry ``ear.status`` ``warning``), without AMD's KDS.
3. **The operator's registration, through the admin API** (``AdminClient``: operator
   JWTs over HTTP, exactly what ``pmc2 admin ...`` sends): the launch measurement computed
   with ``sev-snp-measure`` from the firmware (Debian's OVMF) and vCPU count; the model
   bundle sealed (``pmc2 enclave seal-bundle``) and its manifest digest pinned in the
   launch configuration, whose egress policy allows the bundle's codec towards the
   cloud's loopback address; the registration of measurement + launch configuration
   (HOST_DATA = its digest); the resources ``model-bundle-key`` and ``cloud-credential``.
   The service's JWKS is saved as the pin clients and the enclave use.
4. **Cloud inference** (``pmc2 cloud serve``) accepting the credential, and **the enclave
   app** (``pmc2 enclave serve --provider simulated``: the simulated host launches it with
   HOST_DATA = the launch configuration's digest and the MEASUREMENT of the same
   firmware), started together; the enclave boots (attest, key release, bundle).
5. **The gateway** (``pmc2 gateway serve``) in front of the enclave replica.

Each service runs as a child process (``python -m pmc2._child``: it dies with its parent)
logging to ``STATE/logs/<service>.log``; every step waits for the service's ``/healthz``
and fails with the log's tail if the process exits. ``in_process=True`` runs the same
services as uvicorn servers on threads of this process instead (real sockets; what the
end-to-end tests use, because a restart then takes no interpreter start).

:meth:`DevStack.client_info` (also written to ``STATE/client.json``) holds what a client
needs: URLs, the JWKS pin, the measurement, the launch-configuration digest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

__all__ = [
    "DEFAULT_OVMF",
    "DEFAULT_PORTS",
    "SERVICES",
    "Deployment",
    "DevStack",
    "Ports",
    "StackError",
    "StackOptions",
    "StatePaths",
    "ThreadServer",
    "check_ports_free",
    "free_ports",
    "write_tiny_bundle",
]

DEFAULT_OVMF = Path("/usr/share/OVMF/OVMF_CODE.fd")
SERVICES: tuple[str, ...] = ("attestation", "cloud", "enclave", "gateway")
REGISTRATION_LABEL = "pmc2 up: simulated enclave"
_HEALTH_POLL_S = 0.2
_STOP_TIMEOUT_S = 15.0


class StackError(Exception):
    """The stack could not start or keep running; the message says which service and why."""


@dataclass(frozen=True)
class Ports:
    """The loopback ports: the gateway, the attestation service, cloud inference, the
    enclave replica's internal API (defaults 8400-8403, the default policies' peers)."""

    gateway: int = 8400
    attestation: int = 8401
    cloud: int = 8402
    enclave: int = 8403

    def __post_init__(self) -> None:
        values = list(self.as_dict().values())
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise ValueError(f"a port is 1..65535, not {value!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"the four ports must differ: {self.as_dict()}")

    @classmethod
    def from_base(cls, base: int) -> Ports:
        """``base`` gateway, ``base + 1`` attestation, ``+ 2`` cloud, ``+ 3`` enclave."""
        return cls(base, base + 1, base + 2, base + 3)

    def as_dict(self) -> dict[str, int]:
        return {
            "gateway": self.gateway,
            "attestation": self.attestation,
            "cloud": self.cloud,
            "enclave": self.enclave,
        }


DEFAULT_PORTS = Ports()


@dataclass(frozen=True)
class StackOptions:
    """How to start the stack.

    ``state_dir``: created when missing, reused when present (platform, keys, the
    attestation service's database). ``bundle_dir``: the vision bundle (roles
    ``generator``, ``codec``, ``target``). ``ovmf`` / ``vcpus``: the launch artifacts
    measured and registered. ``gateway_rate`` / ``gateway_burst``: the gateway's
    per-client token bucket. ``enclave_max_batch`` / ``enclave_max_wait_ms``: dynamic
    batching; ``cloud_timeout``: the enclave's limit on a cloud call;
    ``cloud_device`` / ``cloud_threads`` / ``enclave_threads``: compute.
    ``startup_timeout``: per service, seconds until ``/healthz`` answers 200.
    ``in_process``: uvicorn servers on threads instead of child processes;
    ``enclave_overrides``: extra ``EnclaveConfig`` fields (in-process only, e.g. an
    injected ``sleep``). ``progress``: receives one line per step.
    """

    state_dir: Path
    bundle_dir: Path
    ports: Ports = DEFAULT_PORTS
    host: str = "127.0.0.1"
    ovmf: Path = DEFAULT_OVMF
    vcpus: int = 1
    gateway_rate: float = 10.0
    gateway_burst: int = 20
    enclave_max_batch: int = 32
    enclave_max_wait_ms: float = 5.0
    cloud_timeout: float = 10.0
    cloud_device: str = "cpu"
    cloud_threads: int | None = None
    enclave_threads: int | None = None
    boot_attempts: int = 8
    startup_timeout: float = 300.0
    in_process: bool = False
    enclave_overrides: Mapping[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] = field(default=lambda line: None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir).absolute())
        object.__setattr__(self, "bundle_dir", Path(self.bundle_dir))
        object.__setattr__(self, "ovmf", Path(self.ovmf))
        if not 1 <= self.vcpus <= 512:
            raise ValueError("vcpus must be 1..512")
        if self.gateway_rate <= 0 or self.gateway_burst < 1:
            raise ValueError("the gateway rate must be positive and the burst at least 1")
        if self.enclave_overrides and not self.in_process:
            raise ValueError("enclave_overrides apply to in-process stacks only")


@dataclass(frozen=True)
class StatePaths:
    """Where the stack keeps its state (see the module docstring)."""

    root: Path

    @property
    def platform(self) -> Path:
        return self.root / "platform"

    @property
    def operator_key(self) -> Path:
        return self.root / "operator.key"

    @property
    def operator_public_key(self) -> Path:
        return self.root / "operator.key.pub"

    @property
    def attestation(self) -> Path:
        return self.root / "attestation"

    @property
    def cloud_credential(self) -> Path:
        return self.root / "cloud" / "credential"

    @property
    def enclave(self) -> Path:
        return self.root / "enclave"

    @property
    def bundle_key(self) -> Path:
        return self.enclave / "bundle.key"

    @property
    def encrypted_bundle(self) -> Path:
        return self.enclave / "bundle.pmc2enc"

    @property
    def launch_config(self) -> Path:
        return self.enclave / "launch.toml"

    @property
    def egress_policy(self) -> Path:
        return self.enclave / "egress.toml"

    @property
    def jwks(self) -> Path:
        return self.root / "jwks.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def client_json(self) -> Path:
        return self.root / "client.json"


@dataclass(frozen=True)
class Deployment:
    """What the operator registered (step 3)."""

    measurement: bytes
    launch: Any  # policies.LaunchConfiguration
    egress: Any  # policies.EgressPolicy
    codec_id: str
    bundle_digest: str  # "sha384:<manifest digest>"
    registration_id: int
    jwks: dict[str, Any]
    jwks_thumbprints: tuple[str, ...]
    credential: str = field(repr=False)


# --------------------------------------------------------------------------- helpers


def check_ports_free(host: str, ports: Mapping[str, int]) -> None:
    """Raise :class:`StackError` naming the first port that something already holds."""
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # as uvicorn binds (SO_REUSEADDR): a TIME_WAIT leftover is no conflict,
            # a listening socket is
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise StackError(
                    f"port {port} ({name}) on {host} is not available: "
                    f"{exc.strerror or exc}; stop whatever holds it, or choose other ports "
                    "(--port-base, or --gateway-port / --attestation-port / --cloud-port / "
                    "--enclave-port)"
                ) from None


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the kernel considers free right now (tests)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_tiny_bundle(directory: Path) -> Path:
    """An untrained, tiny bundle (U-Net base 2, ``FactorizedPrior(8, 8)``, an airbench
    classifier of widths 8): the whole pipeline runs on it in a fraction of a second,
    its labels mean nothing. Deterministic (fixed seeds), so its digest is stable;
    an existing bundle in ``directory`` is kept."""
    from vision import read_manifest

    if (directory / "manifest.json").is_file():
        read_manifest(directory)
        return directory
    import torch

    from vision import UNetGenerator, build_classifier, make_codec, write_bundle

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(20250701)
        codec = make_codec(N=8, M=8).eval()
        codec.update()
        networks = {
            "generator": UNetGenerator(base=2),
            "codec": codec,
            "target": build_classifier("airbench", {"widths": [8, 8, 8]}),
        }
        write_bundle(
            directory,
            networks,
            metrics={"note": "untrained tiny bundle for development and tests (pmc2 up)"},
        )
    finally:
        torch.random.set_rng_state(state)
    return directory


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _mkdir_private(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _tail(path: Path, offset: int = 0, lines: int = 25) -> str:
    """The last ``lines`` lines written to ``path`` after ``offset`` (this run's)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(nothing logged)"


def _jwks_thumbprints(jwks: Mapping[str, Any]) -> tuple[str, ...]:
    from client import jwk_thumbprint

    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        raise StackError("the attestation service served an empty JWKS")
    return tuple(sorted(jwk_thumbprint(k) for k in keys))


# --------------------------------------------------------------------------- services


class _Service(Protocol):
    name: str

    def start(self) -> None: ...

    def alive(self) -> bool: ...

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> None: ...

    def failure(self) -> str: ...


class ThreadServer:
    """An ASGI app served by uvicorn on a thread of this process (real sockets)."""

    def __init__(self, app: Any, host: str, port: int, name: str = "server") -> None:
        import uvicorn

        self.name = name
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name=f"pmc2-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)

    def failure(self) -> str:
        return f"the in-process {self.name} server stopped (see the log output above)"


class _ProcessService:
    """``pmc2 <argv>`` as a child process that dies with this one."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log_path.open("ab") as log:
            self._offset = log.tell()
            log.write(f"\n--- {dt.datetime.now(dt.UTC).isoformat()} pmc2 {self.argv}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "pmc2._child", str(os.getpid()), *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # own process group: a Ctrl-C in the terminal reaches only `pmc2 up`,
                # which then stops the services in order
                process_group=0,
            )

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)

    def failure(self) -> str:
        code = None if self._proc is None else self._proc.poll()
        return (
            f"the {self.name} process exited with status {code}; "
            f"last lines of {self.log_path}:\n{_tail(self.log_path, self._offset)}"
        )


# --------------------------------------------------------------------------- the stack


class DevStack:
    """The development stack (module docstring). Use as a context manager, or call
    :meth:`start` and :meth:`stop`. Services can be stopped and started again
    individually (:meth:`stop_service`, :meth:`start_service`): the end-to-end tests
    restart the enclave, take the cloud down, and so on.

    Starting warns (:class:`attestation.InsecureRootsWarning`): the attestation service
    trusts the simulated platform's root; nothing is protected by hardware.
    """

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.paths = StatePaths(options.state_dir)
        self.deployment: Deployment | None = None
        self._services: dict[str, _Service] = {}
        self._extra_ports: dict[str, int] = {}
        self._platform: Any = None

    # -- URLs ------------------------------------------------------------------------

    def url(self, service: str) -> str:
        ports = {**self.options.ports.as_dict(), **self._extra_ports}
        return f"http://{self.options.host}:{ports[service]}"

    @property
    def gateway_url(self) -> str:
        return self.url("gateway")

    @property
    def attestation_url(self) -> str:
        return self.url("attestation")

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> DevStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Steps 1-5 of the module docstring; :class:`StackError` (everything started
        so far stopped again) when one fails."""
        from attestation import InsecureRootsWarning

        say = self.options.progress
        check_ports_free(self.options.host, self.options.ports.as_dict())
        warnings.warn(
            "pmc2 up: the attestation service trusts the simulated SEV-SNP platform's root "
            "(insecure roots): development only, nothing is protected by hardware",
            InsecureRootsWarning,
            stacklevel=2,
        )
        try:
            self._prepare_files()
            self.start_service("attestation")
            self.deployment = self._operator()
            self.start_service("cloud", wait=False)
            self.start_service("enclave", wait=False)
            self.wait_ready("cloud")
            self.wait_ready("enclave")
            self.start_service("gateway")
            self.write_client_json()
            say(f"ready: {self.gateway_url} (client values in {self.paths.client_json})")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every running service: extras, the gateway, ..., the attestation service."""
        for name in [*reversed(self._extra_ports), *reversed(SERVICES)]:
            self.stop_service(name)

    def start_extra(
        self,
        name: str,
        port: int,
        *,
        argv: list[str] | None = None,
        app: Callable[[], Any] | None = None,
    ) -> None:
        """Start another service beside the stack (``pmc2 bench latency``'s baseline
        cloud): ``pmc2 <argv>`` in process mode, ``app()`` served in-process otherwise;
        waits for its ``/healthz``."""
        if name in SERVICES:
            raise ValueError(f"{name!r} is one of the stack's own services")
        check_ports_free(self.options.host, {name: port})
        self.stop_service(name)
        self._extra_ports[name] = port
        service: _Service
        if self.options.in_process:
            if app is None:
                raise ValueError("an in-process stack needs app")
            service = ThreadServer(app(), self.options.host, port, name)
        else:
            if argv is None:
                raise ValueError("a process stack needs argv")
            service = _ProcessService(name, argv, self.paths.logs / f"{name}.log")
        self.options.progress(f"starting {name} on {self.url(name)}")
        service.start()
        self._services[name] = service
        self.wait_ready(name)

    def stop_service(self, name: str) -> None:
        service = self._services.pop(name, None)
        if service is not None:
            self.options.progress(f"stopping {name}")
            service.stop()

    def start_service(self, name: str, *, wait: bool = True) -> None:
        """(Re)start one service on its port (a restarted enclave has a new key)."""
        if name not in SERVICES:
            raise ValueError(f"unknown service {name!r}")
        if name != "attestation" and self.deployment is None:
            raise StackError("the operator's registration has not run (start() first)")
        self.stop_service(name)
        service: _Service
        if self.options.in_process:
            service = ThreadServer(
                self._app(name), self.options.host, self.options.ports.as_dict()[name], name
            )
        else:
            service = _ProcessService(name, self._argv(name), self.paths.logs / f"{name}.log")
        self.options.progress(f"starting {name} on {self.url(name)}")
        service.start()
        self._services[name] = service
        if wait:
            self.wait_ready(name)

    def alive(self, name: str) -> bool:
        service = self._services.get(name)
        return service is not None and service.alive()

    def pids(self) -> dict[str, int]:
        """Child process ids (process mode)."""
        return {
            name: s.pid
            for name, s in self._services.items()
            if isinstance(s, _ProcessService) and s.pid is not None
        }

    def check_running(self) -> None:
        """Raise :class:`StackError` if a service stopped on its own."""
        for name, service in self._services.items():
            if not service.alive():
                raise StackError(f"{name} stopped: {service.failure()}")

    def wait_ready(self, name: str, timeout: float | None = None) -> None:
        """Wait until the service's ``/healthz`` answers 200."""
        service = self._services.get(name)
        if service is None:
            raise StackError(f"{name} is not running")
        limit = self.options.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        url = self.url(name) + "/healthz"
        last = "no answer yet"
        with httpx.Client(timeout=5.0) as http:
            while True:
                if not service.alive():
                    raise StackError(f"{name} did not start: {service.failure()}")
                try:
                    response = http.get(url)
                    if response.status_code == 200:
                        self.options.progress(f"{name} ready")
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise StackError(
                        f"{name} not ready after {limit:.0f} s ({url}: {last}); "
                        + service.failure()
                    )
                time.sleep(_HEALTH_POLL_S)

    # -- step 1: files ---------------------------------------------------------------

    def _prepare_files(self) -> None:
        from attestation import SimulatedPlatform, generate_operator_key
        from cloud_infer import generate_credential
        from enclave_app import generate_bundle_key

        say = self.options.progress
        paths = self.paths
        if not self.options.ovmf.is_file():
            raise StackError(
                f"firmware {self.options.ovmf} not found (install Debian's ovmf: "
                "`make sysdeps`, or pass --ovmf)"
            )
        if not (self.options.bundle_dir / "manifest.json").is_file():
            raise StackError(f"no model bundle at {self.options.bundle_dir} (manifest.json)")
        reused = paths.platform.is_dir()
        _mkdir_private(paths.root)
        for sub in (paths.enclave, paths.cloud_credential.parent, paths.logs):
            _mkdir_private(sub)
        say(f"state directory {paths.root} ({'reused' if reused else 'new'})")
        if not (paths.platform / "platform.json").exists():
            say("simulated SEV-SNP platform: generating its ARK -> ASK -> VCEK chain")
        self._platform = SimulatedPlatform.open(paths.platform)
        if not paths.operator_key.exists():
            generate_operator_key(paths.operator_key)
            say(f"operator key {paths.operator_key} (pmc2 admin keygen)")
        if not paths.cloud_credential.exists():
            _write_private(paths.cloud_credential, (generate_credential() + "\n").encode())
            say(f"cloud credential {paths.cloud_credential} (pmc2 cloud credential)")
        if not paths.bundle_key.exists():
            _write_private(paths.bundle_key, generate_bundle_key())

    # -- step 3: the operator ------------------------------------------------------------

    def _operator(self) -> Deployment:
        from attestation import AdminClient, LaunchArtifacts, launch_measurement
        from attestation import load_operator_private_key as load_key
        from cloud_infer import codec_id_for
        from enclave_app import seal_bundle
        from policies import Endpoint, LaunchConfiguration, Peers, load_default
        from vision import manifest_digest, read_manifest

        say = self.options.progress
        opts = self.options
        paths = self.paths
        # the model bundle: roles, codec id, sealed under the state's key
        manifest = read_manifest(opts.bundle_dir)
        missing = {"generator", "codec", "target"} - set(manifest.networks)
        if missing:
            raise StackError(f"the bundle {opts.bundle_dir} lacks {sorted(missing)}")
        codec = manifest.networks["codec"].config
        codec_id = codec_id_for(int(codec["N"]), int(codec["M"]))
        bundle_digest = "sha384:" + manifest_digest(opts.bundle_dir)
        sealed = seal_bundle(opts.bundle_dir, paths.bundle_key.read_bytes())
        paths.encrypted_bundle.write_bytes(sealed)
        say(f"operator: pmc2 enclave seal-bundle -> {paths.encrypted_bundle} ({bundle_digest})")
        # the egress policy (the default's limits; the bundle's codec; this cloud) and
        # the launch configuration naming it, the peers and the bundle
        cloud = Endpoint.parse(self.url("cloud"))
        egress = dataclasses.replace(load_default("egress"), codec=codec_id, destinations=(cloud,))
        launch = LaunchConfiguration(
            egress_policy_digest=egress.digest(),
            peers=Peers(Endpoint.parse(self.attestation_url), cloud),
            model_bundle_digest=bundle_digest,
        )
        paths.egress_policy.write_text(egress.to_toml())
        paths.launch_config.write_text(launch.to_toml())
        host_data = launch.host_data()
        # the launch measurement from the firmware and vCPUs
        artifacts = LaunchArtifacts.from_files(opts.ovmf, vcpus=opts.vcpus)
        measurement = launch_measurement(artifacts)
        say(
            f"operator: pmc2 admin measure --ovmf {opts.ovmf} --vcpus {opts.vcpus} "
            f"-> {measurement.hex()}"
        )
        key = load_key(paths.operator_key)
        with AdminClient(self.attestation_url, key) as admin:
            existing = [
                r
                for r in admin.reference_values()
                if r.get("state") == "active"
                and r.get("measurement") == measurement.hex()
                and r.get("host_data") == host_data.hex()
            ]
            if existing:
                registration_id = int(existing[0]["id"])
                say(f"operator: registration #{registration_id} already in place")
            else:
                reg = admin.register(
                    measurement, REGISTRATION_LABEL, launch_config=launch.to_toml()
                )
                registration_id = int(reg["id"])
                say(
                    f"operator: pmc2 admin register --measurement {measurement.hex()[:16]}... "
                    f"--launch-config {paths.launch_config} -> #{registration_id} "
                    f"(HOST_DATA {host_data.hex()})"
                )
            admin.put_resource("model-bundle-key", paths.bundle_key.read_bytes())
            say("operator: pmc2 admin resource put model-bundle-key --value-file bundle.key")
            credential = paths.cloud_credential.read_text(encoding="ascii").strip()
            admin.put_resource("cloud-credential", credential.encode("ascii"))
            say("operator: pmc2 admin resource put cloud-credential --value-file credential")
        with httpx.Client(timeout=10.0) as http:
            response = http.get(self.attestation_url + "/.well-known/jwks.json")
            response.raise_for_status()
            jwks = response.json()
        thumbprints = _jwks_thumbprints(jwks)
        paths.jwks.write_text(json.dumps(jwks, indent=2, sort_keys=True) + "\n")
        return Deployment(
            measurement=measurement,
            launch=launch,
            egress=egress,
            codec_id=codec_id,
            bundle_digest=bundle_digest,
            registration_id=registration_id,
            jwks=jwks,
            jwks_thumbprints=thumbprints,
            credential=credential,
        )

    # -- service definitions -------------------------------------------------------------

    def _argv(self, name: str) -> list[str]:
        opts = self.options
        paths = self.paths
        port = str(opts.ports.as_dict()[name])
        common = ["--host", opts.host, "--port", port]
        if name == "attestation":
            return [
                "admin",
                "serve",
                "--state",
                str(paths.attestation),
                "--operator-key",
                str(paths.operator_public_key),
                "--insecure-roots",
                str(paths.platform / "roots"),
                "--no-kds",
                "--log-level",
                "warning",
                *common,
            ]
        deployment = self.deployment
        assert deployment is not None
        if name == "cloud":
            argv = [
                "cloud",
                "serve",
                "--bundle",
                str(opts.bundle_dir),
                "--bundle-digest",
                deployment.bundle_digest.removeprefix("sha384:"),
                "--credential-file",
                str(paths.cloud_credential),
                "--device",
                opts.cloud_device,
                *common,
            ]
            if opts.cloud_threads:
                argv += ["--threads", str(opts.cloud_threads)]
            return argv
        if name == "enclave":
            argv = [
                "enclave",
                "serve",
                "--launch-config",
                str(paths.launch_config),
                "--egress-policy",
                str(paths.egress_policy),
                "--bundle",
                str(paths.encrypted_bundle),
                "--provider",
                "simulated",
                "--sim-state",
                str(paths.platform),
                "--sim-ovmf",
                str(opts.ovmf),
                "--sim-vcpus",
                str(opts.vcpus),
                "--jwks",
                str(paths.jwks),
                "--max-batch",
                str(opts.enclave_max_batch),
                "--max-wait-ms",
                str(opts.enclave_max_wait_ms),
                "--cloud-timeout",
                str(opts.cloud_timeout),
                "--boot-attempts",
                str(opts.boot_attempts),
                *common,
            ]
            if opts.enclave_threads:
                argv += ["--threads", str(opts.enclave_threads)]
            return argv
        return [
            "gateway",
            "serve",
            "--replica",
            self.url("enclave"),
            "--rate",
            str(opts.gateway_rate),
            "--burst",
            str(opts.gateway_burst),
            *common,
        ]

    def _app(self, name: str) -> Any:
        opts = self.options
        paths = self.paths
        if name == "attestation":
            from attestation import ServiceConfig, TrustedRoots, create_app
            from attestation import load_operator_public_key as load_public

            return create_app(
                ServiceConfig(
                    state_dir=paths.attestation,
                    operator_keys=(load_public(paths.operator_public_key),),
                    insecure_roots=TrustedRoots.from_dir(paths.platform / "roots"),
                    kds=None,
                    access_log=False,
                )
            )
        deployment = self.deployment
        assert deployment is not None
        if name == "cloud":
            from cloud_infer import CloudConfig, CredentialSet
            from cloud_infer import create_app as cloud_app
            from vision import CIFAR10_CLASSES

            return cloud_app(
                CloudConfig(
                    bundle_dir=opts.bundle_dir,
                    credentials=CredentialSet.of([deployment.credential]),
                    expected_bundle_digest=deployment.bundle_digest.removeprefix("sha384:"),
                    label_names=tuple(CIFAR10_CLASSES),
                    device=opts.cloud_device,
                )
            )
        if name == "enclave":
            from attestation import LaunchArtifacts, SimulatedPlatform
            from enclave_app import BatchConfig, EnclaveConfig, RetryPolicy
            from enclave_app import create_app as enclave_app

            platform = self._platform or SimulatedPlatform.open(paths.platform)
            provider = platform.launch(
                artifacts=LaunchArtifacts.from_files(opts.ovmf, vcpus=opts.vcpus),
                host_data=deployment.launch.host_data(),
            )
            values: dict[str, Any] = {
                "launch_config": deployment.launch,
                "egress_policy": deployment.egress,
                "encrypted_bundle": paths.encrypted_bundle,
                "provider": provider,
                "batching": BatchConfig(
                    max_batch=opts.enclave_max_batch,
                    max_wait=opts.enclave_max_wait_ms / 1000.0,
                ),
                "cloud_timeout": opts.cloud_timeout,
                "retry": RetryPolicy(attempts=opts.boot_attempts),
                "pinned_jwks": deployment.jwks,
            }
            values.update(opts.enclave_overrides)
            return enclave_app(EnclaveConfig(**values))
        from gateway import GatewayConfig, RateLimit
        from gateway import create_app as gateway_app

        return gateway_app(
            GatewayConfig(
                replicas=(self.url("enclave"),),
                rate_limit=RateLimit(rate_per_s=opts.gateway_rate, burst=opts.gateway_burst),
            )
        )

    # -- what a client needs ---------------------------------------------------------------

    def client_info(self) -> dict[str, Any]:
        """URLs and the values a client pins or expects (``STATE/client.json``)."""
        d = self.deployment
        if d is None:
            raise StackError("the stack has not been started")
        return {
            "format": "pmc2-up-client/v1",
            "gateway_url": self.gateway_url,
            "attestation_url": self.attestation_url,
            "jwks_url": self.attestation_url + "/.well-known/jwks.json",
            "jwks_thumbprints": list(d.jwks_thumbprints),
            "jwks": d.jwks,
            "issuer": "pmc2-attestation-service",
            "measurement": d.measurement.hex(),
            "launch_config_digest": d.launch.host_data().hex(),
            "egress_policy_digest": d.egress.digest().hex(),
            "model_bundle_digest": d.bundle_digest,
            "codec": d.codec_id,
            "insecure_simulated_platform": True,
            "internal": {
                "cloud_url": self.url("cloud"),
                "enclave_url": self.url("enclave"),
                "state_dir": str(self.paths.root),
                "registration_id": d.registration_id,
            },
        }

    def write_client_json(self) -> Path:
        path = self.paths.client_json
        path.write_text(json.dumps(self.client_info(), indent=2, sort_keys=True) + "\n")
        return path
