"""End to end over loopback sockets: the whole stack as ``pmc2 up`` starts it (attestation
service trusting the simulated platform, the operator's registration through the admin
API, cloud inference, the enclave app, the gateway), served in process, driven like a
client: attest, send, answer; an enclave restart (new key); the cloud down or slow; the
attestation service down while the enclave boots; every bad envelope."""

from __future__ import annotations

import asyncio
import concurrent.futures
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from client import Client, ClientConfig, Expectations, JwksPin
from cloud_infer import ClassifyRequest
from pmc2._stack import DevStack, ThreadServer
from sealed import (
    SUITE_MLKEM768_X25519,
    EnclaveKeyPair,
    InferenceFailure,
    InferenceResult,
    RequestOptions,
    seal_request,
)
from tests import _e2e_support as e2e
from vision import CIFAR10_CLASSES

pytestmark = pytest.mark.filterwarnings(
    "ignore::attestation.InsecureRootsWarning", "ignore::client.InsecureClientWarning"
)

SLEEPS = e2e.RecordingSleep()
CLOUD_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    s = e2e.in_process_stack(
        tmp_path_factory.mktemp("e2e") / "state",
        cloud_timeout=CLOUD_TIMEOUT,
        enclave_max_wait_ms=20.0,  # concurrent requests surely share batches
        enclave_overrides={"sleep": SLEEPS},
    )
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


def _enclave_health(stack: DevStack, http: httpx.Client) -> dict[str, Any]:
    response = http.get(stack.url("enclave") + "/healthz")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def _sdk(stack: DevStack, **overrides: Any) -> Client:
    info = stack.client_info()
    values: dict[str, Any] = {
        "gateway_url": info["gateway_url"],
        "attestation_url": info["attestation_url"],
        "jwks_pin": JwksPin(thumbprints=info["jwks_thumbprints"]),
        "expect": Expectations(
            measurements=[info["measurement"]],
            launch_config_digests=[info["launch_config_digest"]],
            egress_policy_digests=[info["egress_policy_digest"]],
            model_bundle_digests=[info["model_bundle_digest"]],
            allow_insecure_simulated_platform=True,
        ),
    }
    values.update(overrides)
    return Client(ClientConfig(**values))


def _ok(stack: DevStack, http: httpx.Client, seed: int = 0) -> InferenceResult:
    """One request that must succeed (attesting first, and again after a 421 as a client
    does: the gateway may still publish a restarted enclave's previous key)."""
    offer = e2e.attest(stack, http)
    response, answer = e2e.infer(stack, http, offer, e2e.jpeg(seed))
    if response.status_code == 421:
        offer = e2e.attest(stack, http)
        response, answer = e2e.infer(stack, http, offer, e2e.jpeg(seed))
    assert response.status_code == 200, response.text
    assert isinstance(answer, InferenceResult), answer
    return answer


# --------------------------------------------------------------------------- the happy path


def test_client_json_and_urls(stack: DevStack, http: httpx.Client) -> None:
    info = stack.client_info()
    assert stack.paths.client_json.is_file()
    assert info["codec"] == "pmc2-fp-8-8/v2"
    assert http.get(info["jwks_url"]).json() == info["jwks"]
    for name in ("gateway", "attestation", "cloud", "enclave"):
        assert http.get(stack.url(name) + "/healthz").status_code == 200
    # registered through the operator's admin API: the service lists the registration
    from attestation import AdminClient, load_operator_private_key

    key = load_operator_private_key(stack.paths.operator_key)
    with AdminClient(info["attestation_url"], key) as admin:
        (registration,) = admin.reference_values()
        resources = {r["name"] for r in admin.resources()}
    assert registration["measurement"] == info["measurement"]
    assert registration["host_data"] == info["launch_config_digest"]
    assert {"model-bundle-key", "cloud-credential"} <= resources


def test_attest_send_answer(stack: DevStack, http: httpx.Client) -> None:
    answer = _ok(stack, http)
    assert 0 <= answer.label < 10
    assert answer.label_name == CIFAR10_CLASSES[answer.label]
    assert len(answer.top_k) == 3 and answer.top_k[0].label == answer.label
    assert answer.request_id == "e2e-1"
    timings = dict(answer.timings_us)
    for stage in ("open", "decode", "perturb", "encode", "cloud", "cloud_classify", "total"):
        assert stage in timings
    health = _enclave_health(stack, http)
    assert health["egress"]["images_sent"] >= 1 and health["egress"]["refused"] == 0


def test_client_sdk_through_the_stack(stack: DevStack) -> None:
    images = [e2e.jpeg(seed) for seed in range(3)]
    with _sdk(stack) as client:
        attestation = client.attest()
        results = client.classify(images)
        fresh = client.attest(fresh=True)  # the client's own nonce, verified by the service
    assert attestation.status == "warning" and not attestation.amd_root
    assert attestation.measurement.hex() == stack.client_info()["measurement"]
    assert fresh.fresh and fresh.key_id == attestation.key_id
    assert [r.key_id for r in results] == [attestation.key_id] * 3
    assert all(r.label_name in CIFAR10_CLASSES for r in results)
    assert all(
        r.bytes_sent.jpeg == len(j) and not r.bytes_sent.reencoded
        for r, j in zip(results, images, strict=True)
    )


def test_concurrent_requests_are_batched(stack: DevStack, http: httpx.Client) -> None:
    offer = e2e.attest(stack, http)
    before = _enclave_health(stack, http)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: e2e.infer(stack, http, offer, e2e.jpeg(i))[1], range(16)))
    assert all(isinstance(a, InferenceResult) for a in answers)
    after = _enclave_health(stack, http)
    assert after["images"] - before["images"] == 16
    assert after["batches"] - before["batches"] < 16  # some images shared a batch


# --------------------------------------------------------------------------- bad input


def _retype(envelope: bytes, kem: int) -> bytes:
    return envelope[:6] + struct.pack(">H", kem) + envelope[8:]


def test_every_bad_envelope_gets_its_own_problem(stack: DevStack, http: httpx.Client) -> None:
    offer = e2e.attest(stack, http)
    valid = seal_request(offer.key, e2e.jpeg(1), RequestOptions(top_k=1)).envelope
    # an HPKE-9 (ML-KEM-768 + X25519) envelope addressed to the enclave's HPKE-3 key id
    pq = EnclaveKeyPair.generate(SUITE_MLKEM768_X25519)
    pq_envelope = seal_request(pq.public_key, e2e.jpeg(1), RequestOptions(top_k=1)).envelope
    wrong_suite = pq_envelope[:12] + bytes.fromhex(offer.key_id) + pq_envelope[28:]
    stranger = EnclaveKeyPair.generate()
    unknown = seal_request(stranger.public_key, e2e.jpeg(1), RequestOptions(top_k=1)).envelope
    flipped = bytearray(valid)
    flipped[-1] ^= 1
    cases: dict[str, tuple[bytes, int, str]] = {
        "garbage": (b"this is not an envelope at all", 400, "urn:pmc2:sealed:malformed"),
        "truncated": (valid[:-7], 400, "urn:pmc2:sealed:malformed"),
        "trailing": (valid + b"\0", 400, "urn:pmc2:sealed:malformed"),
        "oversized": (valid + bytes(4_300_000), 413, "urn:pmc2:sealed:oversized"),
        "version": (valid[:4] + b"\x02" + valid[5:], 400, "urn:pmc2:sealed:unsupported-version"),
        "unknown-suite": (_retype(valid, 0x0099), 400, "urn:pmc2:sealed:unsupported-suite"),
        "wrong-suite": (wrong_suite, 400, "urn:pmc2:sealed:wrong-suite"),
        "unknown-key": (unknown, 421, "urn:pmc2:sealed:unknown-key"),
        "tampered": (bytes(flipped), 400, "urn:pmc2:sealed:decryption-failed"),
    }
    details = {}
    for name, (body, status, kind) in cases.items():
        response = http.post(
            stack.gateway_url + "/v1/infer",
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status_code == status, (name, response.status_code, response.text)
        doc = e2e.problem(response)
        assert doc["type"] == kind, (name, doc)
        details[name] = doc.get("detail")
        if name == "unknown-key":
            assert doc["key_id"] == stranger.key_id.hex
            assert doc["current_key_id"] == offer.key_id
            assert doc["current_key_ids"] == [offer.key_id]
    # the two malformed shapes say what is wrong with each
    assert len({details["garbage"], details["truncated"], details["trailing"]}) == 3
    # not an envelope media type: the gateway's own problem
    response = http.post(stack.gateway_url + "/v1/infer", content=valid)
    assert response.status_code == 415
    assert e2e.problem(response)["type"] == "urn:pmc2:gateway:unsupported-media-type"
    # a well-formed envelope with a bad JPEG inside: a *sealed* failure, not a problem
    response, answer = e2e.infer(stack, http, offer, b"\xff\xd8\xff not a jpeg \xff\xd9")
    assert response.status_code == 200
    assert isinstance(answer, InferenceFailure) and answer.code == "invalid-image"
    # and the enclave keeps serving
    _ok(stack, http)


# --------------------------------------------------------------------------- failures


def test_enclave_restart_new_key(stack: DevStack, http: httpx.Client) -> None:
    before = e2e.attest(stack, http)
    with _sdk(stack) as client:
        sdk_before = client.attest()
        assert sdk_before.key_id == before.key_id
        stack.start_service("enclave")  # a restart: a new key pair, a new attestation
        current = _enclave_health(stack, http)["key_id"]
        assert current != before.key_id
        # an envelope sealed to the old key: 421 with the current key id
        response, _ = e2e.infer(stack, http, before, e2e.jpeg(2))
        assert response.status_code == 421
        doc = e2e.problem(response)
        assert doc["type"] == "urn:pmc2:sealed:unknown-key"
        assert doc["key_id"] == before.key_id and doc["current_key_id"] == current
        # the client re-attests (the gateway refreshed at once) and succeeds
        after = e2e.attest(stack, http)
        assert after.key_id == current
        response, answer = e2e.infer(stack, http, after, e2e.jpeg(2))
        assert response.status_code == 200 and isinstance(answer, InferenceResult)
        # the SDK, still holding the old attestation, does the same by itself
        result = client.classify_one(e2e.jpeg(3))
        assert result.key_id == current


def test_cloud_down_then_back(stack: DevStack, http: httpx.Client) -> None:
    offer = e2e.attest(stack, http)
    credential = stack.deployment.credential if stack.deployment else ""
    before = _enclave_health(stack, http)
    stack.stop_service("cloud")
    try:
        images = [e2e.jpeg(10 + i) for i in range(6)]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(lambda j: e2e.infer(stack, http, offer, j), images))
        # nothing lost: every request has its answer, a sealed upstream failure (HTTP 200)
        for response, answer in outcomes:
            assert response.status_code == 200
            assert isinstance(answer, InferenceFailure), answer
            assert answer.code == "upstream-unavailable"
            assert credential not in answer.message
            for image in images:  # nothing leaked: the answer is sealed
                assert image[:64] not in response.content
        health = _enclave_health(stack, http)
        assert health["egress"]["upstream_failures"] > before["egress"]["upstream_failures"]
        assert health["key_id"] == before["key_id"]  # still the same enclave, still serving
        assert http.get(stack.gateway_url + "/healthz").status_code == 200
    finally:
        stack.start_service("cloud")
    answer = _ok(stack, http, seed=20)
    assert _enclave_health(stack, http)["key_id"] == before["key_id"]
    assert answer.label_name in CIFAR10_CLASSES


def test_cloud_slow_then_back(stack: DevStack, http: httpx.Client) -> None:
    offer = e2e.attest(stack, http)
    seen: list[bytes] = []

    async def slow(request: Request) -> Response:
        seen.append(await request.body())
        await asyncio.sleep(CLOUD_TIMEOUT * 4)
        return Response(b"{}", media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    app = Starlette(
        routes=[
            Route("/v1/classify", slow, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    stack.stop_service("cloud")
    server = ThreadServer(app, stack.options.host, stack.options.ports.cloud, "slow-cloud")
    server.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if http.get(stack.url("cloud") + "/healthz").status_code == 200:
                    break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        started = time.monotonic()
        response, answer = e2e.infer(stack, http, offer, e2e.jpeg(30))
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert isinstance(answer, InferenceFailure) and answer.code == "upstream-unavailable"
        assert elapsed < CLOUD_TIMEOUT * 3  # the enclave gave up; it did not wait it out
        assert seen  # what reached the slow cloud: a bit-string batch of the policy's codec
        assert all(
            ClassifyRequest.from_bytes(body).codec == stack.client_info()["codec"] for body in seen
        )
    finally:
        server.stop()
        stack.start_service("cloud")
    _ok(stack, http, seed=31)


def test_attestation_service_down_at_boot(stack: DevStack, http: httpx.Client) -> None:
    stack.stop_service("enclave")
    stack.stop_service("attestation")
    SLEEPS.delays.clear()
    stack.start_service("enclave", wait=False)  # boots while the service is down
    time.sleep(1.2)
    assert SLEEPS.delays, "the enclave did not retry"
    with pytest.raises(httpx.ConnectError):
        http.get(stack.url("enclave") + "/healthz")  # not serving: boot is not done
    stack.start_service("attestation")  # same state: same keys, same registration
    stack.wait_ready("enclave", timeout=30)
    delays = list(SLEEPS.delays)
    assert len(delays) >= 2 and delays[1] > delays[0]  # exponential back-off
    _ok(stack, http, seed=40)
