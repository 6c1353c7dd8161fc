"""Enclave boot against the real attestation service (ASGI) and the simulated platform:
the happy path, a refusal at every step with its reason, retries with back-off, token
refresh."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from attestation import GuestPolicy, GuestReport, ProviderError, ServiceUnavailableError
from enclave_app import BOOT_STEPS, BootError, BootStep, Enclave, RetryPolicy, boot, seal_bundle
from sealed import SUITE_MLKEM768_X25519
from tests import _enclave_support as es
from tests import _service_support as svc


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[es.Stack]:
    s = es.open_stack(tmp_path / "state")
    try:
        yield s
    finally:
        es.close_stack(s)


def _boot_error(config: Any) -> BootError:
    with pytest.raises(BootError) as info:
        boot(config)
    return info.value


def test_boot_happy_path(stack: es.Stack) -> None:
    steps: list[BootStep] = []
    booted = boot(stack.config(), progress=steps.append)
    try:
        assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
        assert all(s.name == BOOT_STEPS[s.step] for s in steps)
        result = booted.attestation
        assert result.public_key == booted.key_pair.public_key
        assert result.host_data == stack.launch.host_data()
        assert result.status == "warning"  # simulated root
        assert booted.credential == es.CREDENTIAL
        assert booted.engine.codec_id == es.CODEC_ID
        assert booted.bundle_digest == es.bundle_digest().removeprefix("sha384:")
        # the service's audit shows the attestation and both releases
        events = [e["event"] for e in stack.env.admin.audit()["entries"]]
        assert events.count("release") == 2
    finally:
        booted.client.close()
    assert not stack.cloud.requests  # boot sends nothing to the cloud


# --- refusal at each step --------------------------------------------------------------


def test_step1_template_launch_config(stack: es.Stack) -> None:
    template = es.launch_config(model_bundle_digest=None)
    err = _boot_error(stack.config(launch_config=template))
    assert err.step == 1 and "template" in err.reason


def test_step1_wrong_egress_policy(stack: es.Stack) -> None:
    err = _boot_error(stack.config(egress_policy=es.egress_policy(max_bytes_per_image=65)))
    assert err.step == 1 and "egress policy digest" in err.reason


def test_step1_hybrid_suite_refused(stack: es.Stack) -> None:
    err = _boot_error(stack.config(suite=SUITE_MLKEM768_X25519))
    assert err.step == 1 and "X25519" in err.reason


def test_step1_bundle_digest_algorithm(stack: es.Stack) -> None:
    launch = es.launch_config(model_bundle_digest="sha256:" + "00" * 32)
    err = _boot_error(stack.config(launch_config=launch))
    assert err.step == 1 and "sha384" in err.reason


def test_step1_missing_bundle(stack: es.Stack, tmp_path: Path) -> None:
    err = _boot_error(stack.config(encrypted_bundle=tmp_path / "absent"))
    assert err.step == 1 and "not a readable file" in err.reason


class _FailingProvider:
    def get_report(self, report_data: bytes, vmpl: int = 0) -> GuestReport:
        raise ProviderError("configfs-tsm: no such device")


def test_step4_provider_failure(stack: es.Stack) -> None:
    err = _boot_error(stack.config(provider=_FailingProvider()))
    assert err.step == 4 and "no such device" in err.reason


def test_step4_host_data_mismatch(stack: es.Stack) -> None:
    # launched with another configuration's HOST_DATA than the one handed to the guest
    provider = svc.guest(host=bytes(32))
    err = _boot_error(stack.config(provider=provider))
    assert err.step == 4 and "HOST_DATA" in err.reason


def test_step5_unregistered_measurement(tmp_path: Path) -> None:
    stack = es.open_stack(tmp_path / "state", register=False)
    try:
        err = _boot_error(stack.config())
        assert err.step == 5 and "refused" in err.reason and "403" in err.reason
        assert not err.unavailable
    finally:
        es.close_stack(stack)


def test_step5_debug_guest_refused(stack: es.Stack) -> None:
    provider = svc.platform().launch(
        measurement=svc.MEASUREMENT,
        host_data=stack.launch.host_data(),
        policy=GuestPolicy(smt=True, debug=True),
    )
    err = _boot_error(stack.config(provider=provider))
    assert err.step == 5 and "debug" in err.reason.lower()


def test_step6_resource_missing(tmp_path: Path) -> None:
    stack = es.open_stack(tmp_path / "state", resources=False)
    try:
        err = _boot_error(stack.config())
        assert err.step == 6 and "404" in err.reason
    finally:
        es.close_stack(stack)


def test_step6_release_denied(stack: es.Stack) -> None:
    stack.env.admin.set_policy(
        "key_release",
        'schema = "pmc2/key-release/v1"\n[[rules]]\nresource = "cloud-credential"\n'
        "any_attested = true\n",
    )
    err = _boot_error(stack.config())
    assert err.step == 6 and "denies" in err.reason


def test_step7_bad_credential(stack: es.Stack) -> None:
    stack.env.admin.put_resource("cloud-credential", b"\xff\xfe not ascii")
    err = _boot_error(stack.config())
    assert err.step == 7 and "ASCII" in err.reason
    stack.env.admin.put_resource("cloud-credential", b"short")
    err = _boot_error(stack.config())
    assert err.step == 7 and "b64token" in err.reason


def test_step8_wrong_bundle_key(stack: es.Stack) -> None:
    stack.env.admin.put_resource("model-bundle-key", bytes(32))
    err = _boot_error(stack.config())
    assert err.step == 8 and "wrong key" in err.reason


def test_step8_tampered_bundle(stack: es.Stack, tmp_path: Path) -> None:
    data = bytearray(es.encrypted_bundle().read_bytes())
    data[200] ^= 1
    path = tmp_path / "tampered.pmc2enc"
    path.write_bytes(bytes(data))
    err = _boot_error(stack.config(encrypted_bundle=path))
    assert err.step == 8 and "damaged" in err.reason


def test_step8_other_bundle_than_pinned(tmp_path: Path) -> None:
    # the launch configuration pins another manifest digest than the bundle's
    launch = es.launch_config(model_bundle_digest="sha384:" + "ab" * 48)
    stack = es.open_stack(tmp_path / "state", launch=launch)
    try:
        err = _boot_error(stack.config())
        assert err.step == 8 and "not the pinned" in err.reason
    finally:
        es.close_stack(stack)


def test_step9_codec_not_the_policy_codec(tmp_path: Path) -> None:
    egress = es.egress_policy(codec="pmc2-fp-128-192/v2")
    stack = es.open_stack(tmp_path / "state", egress=egress)
    try:
        err = _boot_error(stack.config())
        assert err.step == 9 and "pmc2-fp-8-8/v2" in err.reason
    finally:
        es.close_stack(stack)


def test_step9_output_too_large_for_policy(tmp_path: Path) -> None:
    egress = es.egress_policy(max_bytes_per_image=1)
    stack = es.open_stack(tmp_path / "state", egress=egress)
    try:
        err = _boot_error(stack.config())
        assert err.step == 9 and "egress policy refuses" in err.reason
    finally:
        es.close_stack(stack)


def test_bundle_sealed_with_other_key_is_refused(stack: es.Stack, tmp_path: Path) -> None:
    path = tmp_path / "other.pmc2enc"
    path.write_bytes(seal_bundle(es.bundle_dir(), bytes(range(32))))
    err = _boot_error(stack.config(encrypted_bundle=path))
    assert err.step == 8 and "wrong key" in err.reason


# --- attestation service down at boot -------------------------------------------------


class _Flaky(httpx.BaseTransport):
    """Fails the first ``failures`` requests (connection refused or 503), then forwards."""

    def __init__(self, inner: httpx.BaseTransport, failures: int, kind: str = "down") -> None:
        self.inner = inner
        self.failures = failures
        self.kind = kind
        self.seen: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        if self.failures > 0:
            self.failures -= 1
            if self.kind == "down":
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(503, json={"title": "Service Unavailable"})
        return self.inner.handle_request(request)


def _flaky_http(stack: es.Stack, failures: int, kind: str = "down") -> tuple[httpx.Client, _Flaky]:
    flaky = _Flaky(svc.SyncASGITransport(stack.env.app), failures, kind)
    return httpx.Client(transport=flaky, base_url="http://testserver"), flaky


@pytest.mark.parametrize("kind", ["down", "503"])
def test_service_down_at_boot_retries_with_backoff(stack: es.Stack, kind: str) -> None:
    http, flaky = _flaky_http(stack, 3, kind)
    sleeps: list[float] = []
    retry = RetryPolicy(attempts=5, initial=0.5, factor=2.0, max_delay=30.0, jitter=0.0)
    try:
        booted = boot(stack.config(attestation_http=http, sleep=sleeps.append, retry=retry))
        booted.client.close()
    finally:
        http.close()
    assert sleeps == [0.5, 1.0, 2.0]
    assert flaky.seen[:4] == ["POST /v1/challenge"] * 4


def test_service_down_for_good_fails_step3(stack: es.Stack) -> None:
    http, _ = _flaky_http(stack, 100)
    sleeps: list[float] = []
    retry = RetryPolicy(attempts=4, initial=1.0, factor=3.0, max_delay=5.0, jitter=0.0)
    try:
        err = _boot_error(stack.config(attestation_http=http, sleep=sleeps.append, retry=retry))
    finally:
        http.close()
    assert err.step == 3 and err.unavailable and "after 4 attempts" in err.reason
    assert sleeps == [1.0, 3.0, 5.0]


class _DropAttest(httpx.BaseTransport):
    """The service goes away exactly when the first attestation is submitted."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.dropped = False
        self.seen: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.url.path)
        if request.url.path == "/v1/attest" and not self.dropped:
            self.dropped = True
            raise httpx.ReadTimeout("timed out", request=request)
        return self.inner.handle_request(request)


def test_failed_attest_restarts_with_a_fresh_nonce(stack: es.Stack) -> None:
    drop = _DropAttest(svc.SyncASGITransport(stack.env.app))
    http = httpx.Client(transport=drop, base_url="http://testserver")
    try:
        booted = boot(stack.config(attestation_http=http))
        booted.client.close()
    finally:
        http.close()
    assert drop.seen[:4] == ["/v1/challenge", "/v1/attest", "/v1/challenge", "/v1/attest"]


def test_release_retried_while_unavailable(stack: es.Stack) -> None:
    class _DropRelease(httpx.BaseTransport):
        def __init__(self, inner: httpx.BaseTransport) -> None:
            self.inner = inner
            self.left = 2

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.startswith("/v1/resource/") and self.left:
                self.left -= 1
                return httpx.Response(502)
            return self.inner.handle_request(request)

    http = httpx.Client(
        transport=_DropRelease(svc.SyncASGITransport(stack.env.app)), base_url="http://testserver"
    )
    sleeps: list[float] = []
    try:
        booted = boot(stack.config(attestation_http=http, sleep=sleeps.append))
        booted.client.close()
    finally:
        http.close()
    assert len(sleeps) == 2


# --- token refresh ----------------------------------------------------------------------


def test_refresh_delay_and_refresh(stack: es.Stack) -> None:
    enclave = Enclave(boot(stack.config()))
    try:
        first = enclave.attestation
        lifetime = (first.expires_at - first.issued_at).total_seconds()
        assert lifetime == 3600
        # refresh at 20 % of the lifetime before expiry
        assert enclave.refresh_delay(first.issued_at) == pytest.approx(0.8 * lifetime)
        stack.env.clock.advance(0.8 * lifetime + 1)
        assert enclave.refresh_delay() == 0
        second = enclave.refresh_token()
        assert second.token != first.token
        assert second.public_key == first.public_key  # same key pair
        assert second.expires_at > first.expires_at
        assert enclave.attestation_document()["token"] == second.token
        assert enclave.refreshes == 1
    finally:
        asyncio.run(enclave.aclose())


def test_expired_token_is_not_handed_out(stack: es.Stack) -> None:
    from enclave_app import EnclaveNotReadyError

    enclave = Enclave(boot(stack.config()))
    try:
        stack.env.clock.advance(3601)
        with pytest.raises(EnclaveNotReadyError):
            enclave.attestation_document()
        assert enclave.health()["ready"] is False
    finally:
        asyncio.run(enclave.aclose())


def test_refresh_loop_backs_off_then_recovers(stack: es.Stack) -> None:
    flaky_http, flaky = _flaky_http(stack, 0)
    enclave = Enclave(boot(stack.config(attestation_http=flaky_http)))
    sleeps: list[float] = []
    done = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            flaky.failures = 2  # the service is down when the refresh is due
            stack.env.clock.advance(3000)
        if enclave.refreshes >= 1:
            done.set()
            await asyncio.Event().wait()  # park forever (cancelled by aclose)

    retry = RetryPolicy(attempts=10, initial=1.0, factor=2.0, max_delay=60.0, jitter=0.0)
    object.__setattr__(enclave.config, "refresh_retry", retry)
    enclave._async_sleep = fake_sleep

    async def run() -> None:
        await enclave.start()
        await asyncio.wait_for(done.wait(), 30)
        await enclave.aclose()

    try:
        asyncio.run(run())
    finally:
        flaky_http.close()
    assert sleeps[0] == pytest.approx(2880.0)
    assert sleeps[1:3] == [1.0, 2.0]  # two failures, back-off
    assert enclave.refreshes == 1
    assert enclave.last_refresh_error is None


def test_unavailable_error_type_from_client(stack: es.Stack) -> None:
    http, _ = _flaky_http(stack, 1)
    try:
        from enclave_app._boot import make_attestation_client

        client = make_attestation_client(stack.config(attestation_http=http))
        with pytest.raises(ServiceUnavailableError):
            client.challenge()
    finally:
        http.close()


def test_clock_is_injected(stack: es.Stack) -> None:
    # a token verified at a time before it was issued is refused: the clock is an input
    early = stack.env.clock.now - dt.timedelta(hours=1)
    err = _boot_error(stack.config(clock=lambda: early))
    assert err.step == 5 and "future" in err.reason
