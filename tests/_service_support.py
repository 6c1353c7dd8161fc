"""Shared helpers for the attestation-service tests: one simulated platform per session,
a controllable clock, a service over ASGI with an operator key."""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
from cryptography.hazmat.primitives.asymmetric import ed25519
from starlette.applications import Starlette

from attestation import (
    AdminClient,
    AttestationClient,
    GuestPolicy,
    InsecureRootsWarning,
    ServiceConfig,
    TrustedRoots,
    create_app,
)
from attestation._sim import SimulatedPlatform, SimulatedProvider
from policies import LaunchConfiguration, load_default
from sealed import EnclaveKeyPair

MEASUREMENT = bytes.fromhex("a5" * 48)
OTHER_MEASUREMENT = bytes.fromhex("5a" * 48)
BUNDLE_DIGEST = "sha256:" + "11" * 32


@functools.cache
def platform() -> SimulatedPlatform:
    """The session's simulated Milan platform (RSA-4096 chain generated once)."""
    root = Path(tempfile.mkdtemp(prefix="pmc2-sim-"))
    atexit.register(shutil.rmtree, root, True)
    return SimulatedPlatform.create(root / "platform")


@functools.cache
def roots() -> TrustedRoots:
    return TrustedRoots.from_dir(platform().roots_dir)


@functools.cache
def launch_config() -> LaunchConfiguration:
    return load_default("launch_config").with_bundle_digest(BUNDLE_DIGEST)


def host_data() -> bytes:
    return launch_config().host_data()


def guest(
    *,
    measurement: bytes = MEASUREMENT,
    host: bytes | None = None,
    debug: bool = False,
) -> SimulatedProvider:
    return platform().launch(
        measurement=measurement,
        host_data=host_data() if host is None else host,
        policy=GuestPolicy(smt=True, debug=debug),
    )


class Clock:
    """A settable clock (starts at the real time: the simulated chain is valid then)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class SyncASGITransport(httpx.BaseTransport):
    """A synchronous httpx transport calling an ASGI app in a blocking portal."""

    def __init__(self, app: Starlette) -> None:
        self._cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._cm.__enter__()
        self._asgi = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=body)

        async def run() -> httpx.Response:
            response = await self._asgi.handle_async_request(copy)
            data = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=data)

        return self._portal.call(run)

    def close(self) -> None:
        """Kept open: several clients may share this transport (see :meth:`shutdown`)."""

    def shutdown(self) -> None:
        self._cm.__exit__(None, None, None)


def make_app(config: ServiceConfig) -> Starlette:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRootsWarning)
        return create_app(config)


@dataclass
class Env:
    """A service over ASGI (TestClient) with its operator, clients and clock."""

    state_dir: Path
    clock: Clock
    operator: ed25519.Ed25519PrivateKey
    app: Starlette
    http: httpx.Client
    client: AttestationClient
    admin: AdminClient
    transport: SyncASGITransport

    def register(self, measurement: bytes = MEASUREMENT, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("launch_config", launch_config().to_toml())
        return self.admin.register(measurement, kwargs.pop("label", "enclave v1"), **kwargs)

    def attest(self, provider: SimulatedProvider | None = None) -> tuple[Any, EnclaveKeyPair]:
        key_pair = EnclaveKeyPair.generate()
        result = self.client.attest(provider or guest(), key_pair)
        return result, key_pair


def open_env(
    state_dir: Path,
    operator: ed25519.Ed25519PrivateKey | None = None,
    clock: Clock | None = None,
    **overrides: Any,
) -> Env:
    operator = operator or ed25519.Ed25519PrivateKey.generate()
    clock = clock or Clock()
    settings: dict[str, Any] = {
        "state_dir": state_dir,
        "operator_keys": (operator.public_key(),),
        "insecure_roots": roots(),
        "clock": clock,
        "access_log": False,
    }
    settings.update(overrides)
    config = ServiceConfig(**settings)
    app = make_app(config)
    transport = SyncASGITransport(app)
    http = httpx.Client(transport=transport, base_url="http://testserver")
    client = AttestationClient("http://testserver", http=http, clock=clock)
    admin = AdminClient("http://testserver", operator, http=http, clock=clock)
    return Env(state_dir, clock, operator, app, http, client, admin, transport)


def close_env(env: Env) -> None:
    env.client.close()
    env.admin.close()
    env.http.close()
    env.transport.shutdown()
    env.app.state.service.close()


def env_fixture(tmp_path: Path) -> Iterator[Env]:
    env = open_env(tmp_path / "state")
    try:
        yield env
    finally:
        close_env(env)


def async_client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
