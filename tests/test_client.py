"""The client SDK against the whole stack in process: the attestation service (simulated
platform), an enclave replica booted against it (tiny untrained networks, a recording fake
cloud), and the real gateway in front of it, all over ASGI.

Every refusal test runs the client through a recording transport and checks that the
gateway's ``/v1/infer`` was never called and that no request carried a JPEG byte
sequence: nothing is sent before attestation succeeds.
"""

from __future__ import annotations

import base64
import copy
import doctest
import importlib
import io
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import numpy as np
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import client
from client import (
    AsyncClient,
    AttestationFailed,
    Client,
    ClientConfig,
    Expectations,
    InsecureClientWarning,
    InvalidImage,
    JpegOptions,
    JwksPin,
    PolicyMismatch,
    ProtocolError,
    ServerRefused,
    TransportError,
    jwk_thumbprint,
    prepare_image,
    select_pinned_keys,
)
from enclave_app import Enclave, boot
from enclave_app import create_app as enclave_app
from gateway import GatewayConfig, RateLimit
from gateway import create_app as gateway_app
from sealed import (
    SUITE_MLKEM768_X25519,
    BitstringSizes,
    EnclaveKeyPair,
    InferenceResult,
    ScoredLabel,
    open_request,
)
from tests import _enclave_support as es
from tests import _service_support as svc

GATEWAY = "http://gateway.test"
ATTEST = "http://attest.test"
REPLICA = "http://replica-0.test:8403"
SOI = b"\xff\xd8\xff"

# --- the stack -------------------------------------------------------------------------


class Switch(httpx.AsyncBaseTransport):
    """The gateway's way to its replica: the current enclave app (swappable: restarts)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        inner = httpx.ASGITransport(app=self.app)
        response = await inner.handle_async_request(request)
        content = await response.aread()
        return httpx.Response(response.status_code, headers=response.headers, content=content)


@dataclass
class Harness:
    """The stack, an event loop (blocking portal) it runs in, and the apps by host name."""

    stack: es.Stack
    portal: Any
    portal_cm: Any
    enclave: Enclave
    switch: Switch
    apps: dict[str, Starlette] = field(default_factory=dict)

    @property
    def clock(self) -> svc.Clock:
        return self.stack.env.clock

    def thumbprints(self) -> list[str]:
        return [jwk_thumbprint(k) for k in self.stack.env.client.jwks()["keys"]]

    def expectations(self, **overrides: Any) -> Expectations:
        values: dict[str, Any] = {
            "measurements": [svc.MEASUREMENT],
            "launch_config_digests": [self.stack.launch.host_data()],
            "egress_policy_digests": [self.stack.egress.digest()],
            "model_bundle_digests": [es.bundle_digest()],
            "allow_insecure_simulated_platform": True,
        }
        values.update(overrides)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureClientWarning)
            return Expectations(**values)

    def config(self, **overrides: Any) -> ClientConfig:
        values: dict[str, Any] = {
            "gateway_url": GATEWAY,
            "attestation_url": ATTEST,
            "jwks_pin": JwksPin(thumbprints=self.thumbprints()),
            "expect": self.expectations(),
            "clock": self.clock,
        }
        values.update(overrides)
        return ClientConfig(**values)

    def new_gateway(self, switch: Switch | None = None) -> Starlette:
        config = GatewayConfig(
            replicas=(REPLICA,),
            transport=switch or self.switch,
            rate_limit=RateLimit(rate_per_s=10_000.0, burst=10_000),
        )
        return gateway_app(config)

    def boot_enclave(self) -> Enclave:
        enclave = Enclave(boot(self.stack.config()))
        self.portal.call(_start, enclave)
        return enclave


async def _start(enclave: Enclave) -> None:
    await enclave.start(refresh=False)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    stack = es.open_stack(tmp_path_factory.mktemp("client") / "state")
    portal_cm = anyio.from_thread.start_blocking_portal()
    portal = portal_cm.__enter__()
    enclave = Enclave(boot(stack.config()))
    portal.call(_start, enclave)
    switch = Switch(enclave_app(enclave))
    h = Harness(stack, portal, portal_cm, enclave, switch)
    h.apps = {"gateway.test": h.new_gateway(), "attest.test": stack.env.app}
    try:
        yield h
    finally:
        portal.call(enclave.aclose)
        portal_cm.__exit__(None, None, None)
        es.close_stack(stack)


# --- recording transports ------------------------------------------------------------

Tamper = Callable[[httpx.Request, httpx.Response], httpx.Response]


@dataclass
class Seen:
    method: str
    url: str
    content: bytes


class Recorder:
    """Shared by the sync and async transports: the apps by host, an optional tamper
    hook (a malicious network / gateway), and everything the client sent."""

    def __init__(
        self,
        apps: dict[str, Starlette],
        tamper: Tamper | None = None,
        tamper_request: Callable[[httpx.Request], httpx.Request] | None = None,
    ) -> None:
        self.apps = apps
        self.tamper = tamper
        self.tamper_request = tamper_request
        self.seen: list[Seen] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self.seen.append(Seen(request.method, str(request.url), body))
        if self.tamper_request is not None:
            request = self.tamper_request(request)
            body = await request.aread()
        app = self.apps.get(request.url.host)
        if app is None:
            raise httpx.ConnectError("connection refused", request=request)
        forwarded = httpx.Request(
            request.method, request.url, headers=request.headers, content=body
        )
        inner = httpx.ASGITransport(app=app, client=("198.51.100.9", 5000))
        response = await inner.handle_async_request(forwarded)
        content = await response.aread()
        headers = [(k, v) for k, v in response.headers.items() if k != "content-length"]
        response = httpx.Response(response.status_code, headers=headers, content=content)
        if self.tamper is not None:
            response = self.tamper(request, response)
        return response

    # what was sent
    def paths(self) -> list[str]:
        return [f"{s.method} {httpx.URL(s.url).host}{httpx.URL(s.url).path}" for s in self.seen]

    def infers(self) -> int:
        return sum(s.url == GATEWAY + "/v1/infer" for s in self.seen)

    def assert_no_image_sent(self, jpegs: list[bytes]) -> None:
        assert self.infers() == 0, self.paths()
        for s in self.seen:
            blob = s.url.encode() + s.content
            assert SOI not in blob
            for jpeg in jpegs:
                for i in range(0, len(jpeg) - 16, 8):
                    assert jpeg[i : i + 16] not in blob


class SyncTransport(httpx.BaseTransport):
    def __init__(self, recorder: Recorder, portal: Any) -> None:
        self.recorder = recorder
        self.portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        copy_ = httpx.Request(request.method, request.url, headers=request.headers, content=body)

        async def run() -> tuple[int, list[tuple[str, str]], bytes]:
            response = await self.recorder.handle(copy_)
            return response.status_code, list(response.headers.items()), response.content

        status, headers, content = self.portal.call(run)
        return httpx.Response(status, headers=headers, content=content)


class AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.recorder.handle(request)


def sync_client(h: Harness, recorder: Recorder, **overrides: Any) -> Client:
    return Client(h.config(**overrides), transport=SyncTransport(recorder, h.portal))


def jpeg_bytes(seed: int = 0, size: int = 32) -> bytes:
    return es.jpeg(seed=seed, size=size)


# --- happy paths -----------------------------------------------------------------------


def test_attest_then_classify(harness: Harness, tmp_path: Path) -> None:
    recorder = Recorder(harness.apps)
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(1))
    png = io.BytesIO()
    Image.fromarray(np.full((40, 24, 3), 120, np.uint8)).save(png, "PNG")
    images: list[Any] = [
        path,
        jpeg_bytes(2),
        png.getvalue(),
        Image.new("RGB", (32, 32), (200, 10, 10)),
        np.zeros((32, 32), np.uint8),
    ]
    cloud_before = len(harness.stack.cloud.requests)
    with sync_client(harness, recorder) as c:
        attestation = c.attest()
        assert recorder.paths() == [
            "GET gateway.test/v1/attestation",
            "GET attest.test/.well-known/jwks.json",
        ]
        results = c.classify(images)
        assert c.attestation is attestation
    # what was attested
    assert attestation.key_id == harness.enclave.key_pair.key_id.hex
    assert attestation.public_key == harness.enclave.key_pair.public_key
    assert attestation.measurement == svc.MEASUREMENT
    assert attestation.host_data == harness.stack.launch.host_data()
    assert attestation.egress_policy_digest == harness.stack.egress.digest()
    assert attestation.model_bundle_digest == es.bundle_digest()
    assert attestation.status == "warning" and not attestation.amd_root and not attestation.fresh
    assert json.dumps(attestation.summary())
    # one attestation, then one infer per image; no JPEG outside the envelopes
    assert recorder.paths().count("GET gateway.test/v1/attestation") == 1
    assert recorder.infers() == 5
    for seen in recorder.seen:
        assert SOI not in seen.content
    # the answers
    assert [r.source for r in results[:1]] == [str(path)]
    for r in results:
        assert r.label_name == f"class-{r.label}"
        assert r.scores[0].label == r.label and len(r.scores) == 3
        assert r.key_id == attestation.key_id
        assert r.bytes_sent.envelope > r.bytes_sent.jpeg > 0
        # header 28 + enc_len 2 + enc 32 + ct_len 4 + tag 16, plaintext padded to 1 KiB
        assert (r.bytes_sent.envelope - 82) % 1024 == 0
        t = r.timings
        assert t.round_trip_ms > 0 and t.seal_ms >= 0 and t.jpeg_ms >= 0
        assert {"open", "decode", "perturb", "encode", "cloud", "total"} <= set(t.server_ms)
        assert t.reattest_ms == 0
        assert json.dumps(r.to_dict())
    # JPEG inputs that suit pass through byte for byte; the rest is re-encoded
    assert [r.bytes_sent.reencoded for r in results] == [False, False, True, True, True]
    assert results[0].bytes_sent.jpeg == len(jpeg_bytes(1))
    assert results[2].size == (24, 40)
    # and the cloud saw only policy-conforming bit-strings
    new = harness.stack.cloud.requests[cloud_before:]
    assert harness.stack.cloud.check_conforming(harness.stack.egress, requests=new) == 5


def test_async_client_fresh_nonce_and_concurrency(harness: Harness) -> None:
    recorder = Recorder(harness.apps)
    config = harness.config(fresh_nonce=True)
    jpegs = [jpeg_bytes(seed) for seed in range(6)]

    async def run() -> tuple[Any, list[Any]]:
        async with AsyncClient(config, transport=AsyncTransport(recorder)) as c:
            attestation = await c.attest()
            results = await c.classify(jpegs, concurrency=3)
            return attestation, results

    attestation, results = harness.portal.call(run)
    assert attestation.fresh and attestation.claims["pmc2.nonce_source"] == "client"
    assert attestation.key_id == harness.enclave.key_pair.key_id.hex
    assert len(attestation.nonce) == 32
    paths = recorder.paths()
    assert paths[:4] == [
        "GET gateway.test/v1/attestation",
        "GET gateway.test/v1/attestation",
        "POST attest.test/v1/verify",
        "GET attest.test/.well-known/jwks.json",
    ]
    nonce_query = httpx.URL(recorder.seen[1].url).params
    assert nonce_query["key_id"] == attestation.key_id
    assert base64.urlsafe_b64decode(nonce_query["nonce"] + "==") == attestation.nonce
    assert recorder.infers() == 6
    assert [r.request_id for r in results] == sorted(
        (r.request_id for r in results), key=lambda x: int(x.rsplit("-", 1)[1])
    )
    assert all(r.bytes_sent.jpeg == len(j) for r, j in zip(results, jpegs, strict=True))


def test_cache_until_expiry(harness: Harness) -> None:
    recorder = Recorder(harness.apps)
    now = [harness.clock()]
    with sync_client(harness, recorder, clock=lambda: now[0]) as c:
        first = c.attest()
        c.classify_one(jpeg_bytes(3))
        c.classify_one(jpeg_bytes(4))
        assert recorder.paths().count("GET gateway.test/v1/attestation") == 1
        # inside the refresh margin (30 s before exp): attest again
        now[0] = first.expires_at - timedelta(seconds=10)
        assert c.attestation is None
        c.classify_one(jpeg_bytes(5))
        assert recorder.paths().count("GET gateway.test/v1/attestation") == 2
        assert recorder.paths().count("GET attest.test/.well-known/jwks.json") == 1
        # forced attestation
        c.attest(force=True)
        assert recorder.paths().count("GET gateway.test/v1/attestation") == 3


def test_reattests_when_the_enclave_key_changes(harness: Harness) -> None:
    switch = Switch(harness.switch.app)
    apps = {**harness.apps, "gateway.test": harness.new_gateway(switch)}
    recorder = Recorder(apps)
    restarted = harness.boot_enclave()
    try:
        with sync_client(harness, recorder) as c:
            before = c.classify_one(jpeg_bytes(6))
            assert before.key_id == harness.enclave.key_pair.key_id.hex
            switch.app = enclave_app(restarted)  # the replica restarts with a new key
            after = c.classify_one(jpeg_bytes(7))
        assert after.key_id == restarted.key_pair.key_id.hex != before.key_id
        assert after.timings.reattest_ms > 0
        paths = recorder.paths()
        assert paths[-3:] == [
            "POST gateway.test/v1/infer",  # 421: unknown key
            "GET gateway.test/v1/attestation",
            "POST gateway.test/v1/infer",
        ]
        assert paths.count("POST gateway.test/v1/infer") == 3
        assert paths.count("GET gateway.test/v1/attestation") == 2
    finally:
        harness.portal.call(restarted.aclose)


# --- refusals: nothing is sent -------------------------------------------------------------


def _listing(response: httpx.Response) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(response.content)
    return doc


def _json_response(response: httpx.Response, doc: Any) -> httpx.Response:
    return httpx.Response(response.status_code, json=doc)


def on_listing(change: Callable[[dict[str, Any]], None]) -> Tamper:
    """A gateway that alters its attestation list."""

    def tamper(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.host == "gateway.test" and request.url.path == "/v1/attestation":
            if "nonce" in request.url.params:
                return response
            doc = _listing(response)
            change(doc)
            return _json_response(response, doc)
        return response

    return tamper


def _flip_payload(doc: dict[str, Any]) -> None:
    head, payload, sig = doc["attestations"][0]["token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["submods"]["sev-snp"]["pmc2.measurement"] = "5a" * 48
    raw = json.dumps(claims, separators=(",", ":")).encode()
    doc["attestations"][0]["token"] = ".".join(
        [head, base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), sig]
    )


ATTACKER_KEY = ECKey.generate_key("P-384")


def _forge(doc: dict[str, Any]) -> None:
    """Re-sign the token's claims with the attacker's key (served as its JWKS below)."""
    token = doc["attestations"][0]["token"]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    kid = ATTACKER_KEY.thumbprint()
    doc["attestations"][0]["token"] = jwt.encode(
        {"alg": "ES384", "typ": "JWT", "kid": kid}, claims, ATTACKER_KEY, algorithms=["ES384"]
    )


def _attacker_jwks(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    if request.url.path == "/.well-known/jwks.json":
        jwk = dict(ATTACKER_KEY.as_dict(private=False))
        jwk.update(kid=ATTACKER_KEY.thumbprint(), alg="ES384")
        return httpx.Response(200, json={"keys": [jwk]})
    return on_listing(_forge)(request, response)


SWAP = EnclaveKeyPair.generate()  # the gateway's own key


def _swap_key(doc: dict[str, Any]) -> None:
    entry = doc["attestations"][0]
    entry["public_key_jwk"] = SWAP.public_key.to_jwk()
    entry["key_id"] = SWAP.key_id.hex


def _swap_jwk_only(doc: dict[str, Any]) -> None:
    jwk = SWAP.public_key.to_jwk()
    del jwk["kid"]
    doc["attestations"][0]["public_key_jwk"] = jwk


def _garbage(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    if request.url.host == "gateway.test":
        return httpx.Response(
            200, content=b"<html>hello</html>", headers={"content-type": "text/html"}
        )
    return response


def _not_a_list(doc: dict[str, Any]) -> None:
    doc["attestations"] = {"key_id": "x"}


def _unavailable(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    if request.url.host == "gateway.test":
        problem = {
            "type": "urn:pmc2:gateway:no-attested-replica",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "no enclave replica is attested",
        }
        return httpx.Response(
            503,
            content=json.dumps(problem).encode(),
            headers={"content-type": "application/problem+json", "retry-after": "2"},
        )
    return response


def _unreachable(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _other_pin(h: Harness) -> dict[str, Any]:
    return {"jwks_pin": JwksPin(thumbprints=[ECKey.generate_key("P-384").thumbprint()])}


@dataclass(frozen=True)
class Case:
    name: str
    error: type[Exception]
    match: str
    tamper: Tamper | None = None
    overrides: Callable[[Harness], dict[str, Any]] = lambda h: {}


CASES = [
    Case("tampered token", AttestationFailed, "does not verify", on_listing(_flip_payload)),
    Case(
        "wrong key set (pin mismatch)", AttestationFailed, "matches the pin", overrides=_other_pin
    ),
    Case("forged key set and token", AttestationFailed, "matches the pin", _attacker_jwks),
    Case(
        "unexpected measurement",
        PolicyMismatch,
        "measurement not accepted",
        overrides=lambda h: {"expect": h.expectations(measurements=[svc.OTHER_MEASUREMENT])},
    ),
    Case(
        "egress policy not accepted",
        PolicyMismatch,
        "egress policy digest not accepted",
        overrides=lambda h: {
            "expect": h.expectations(
                egress_policy_digests=[es.egress_policy(max_bytes_per_image=4096).digest()]
            )
        },
    ),
    Case(
        "unexpected HOST_DATA",
        PolicyMismatch,
        "HOST_DATA",
        overrides=lambda h: {"expect": h.expectations(launch_config_digests=["00" * 32])},
    ),
    Case(
        "appraisal policy not accepted",
        PolicyMismatch,
        "appraisal policy digest",
        overrides=lambda h: {"expect": h.expectations(appraisal_policy_digests=["00" * 48])},
    ),
    Case(
        "simulated platform not allowed",
        PolicyMismatch,
        "attestation status not accepted",
        overrides=lambda h: {"expect": h.expectations(allow_insecure_simulated_platform=False)},
    ),
    Case(
        "another HPKE suite required",
        PolicyMismatch,
        "HPKE suite not accepted: expected one of \\[HPKE-9\\]",
        overrides=lambda h: {"suite": SUITE_MLKEM768_X25519},
    ),
    Case(
        "expired token",
        AttestationFailed,
        "token expired",
        overrides=lambda h: {"clock": lambda: h.clock() + timedelta(hours=2)},
    ),
    Case(
        "token from the future",
        AttestationFailed,
        "issued in the future",
        overrides=lambda h: {"clock": lambda: h.clock() - timedelta(hours=1)},
    ),
    Case("gateway answers garbage", ProtocolError, "expected application/json", _garbage),
    Case(
        "gateway answers a bad list",
        ProtocolError,
        "no 'attestations' array",
        on_listing(_not_a_list),
    ),
    Case(
        "gateway swaps the enclave key",
        AttestationFailed,
        "token bound to key",
        on_listing(_swap_key),
    ),
    Case(
        "gateway swaps the JWK only",
        AttestationFailed,
        "token bound to key",
        on_listing(_swap_jwk_only),
    ),
    Case(
        "no attested replica", ServerRefused, "no-attested-replica.*retry after 2 s", _unavailable
    ),
    Case("gateway unreachable", TransportError, "unreachable: ConnectError", _unreachable),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_refused_before_any_image_is_sent(harness: Harness, case: Case, tmp_path: Path) -> None:
    recorder = Recorder(harness.apps, case.tamper)
    path = tmp_path / "secret.jpg"
    jpegs = [jpeg_bytes(11), jpeg_bytes(12)]
    path.write_bytes(jpegs[1])
    with sync_client(harness, recorder, **case.overrides(harness)) as c:
        with pytest.raises(case.error, match=case.match) as info:
            c.classify([jpegs[0], path])
        assert c.attestation is None
    assert isinstance(info.value, client.ClientError)
    recorder.assert_no_image_sent(jpegs)


@pytest.mark.parametrize("case", CASES[:3] + CASES[12:15], ids=lambda c: c.name)
def test_async_refused_before_any_image_is_sent(harness: Harness, case: Case) -> None:
    recorder = Recorder(harness.apps, case.tamper)
    jpegs = [jpeg_bytes(13)]
    config = harness.config(**case.overrides(harness))

    async def run() -> None:
        async with AsyncClient(config, transport=AsyncTransport(recorder)) as c:
            await c.classify(jpegs)

    with pytest.raises(case.error, match=case.match):
        harness.portal.call(run)
    recorder.assert_no_image_sent(jpegs)


# fresh-nonce mode: the gateway cannot substitute a key or replay evidence


def test_fresh_nonce_refuses_a_substituted_key(harness: Harness) -> None:
    # the gateway offers its own key, and passes the real enclave's evidence for the
    # client's nonce off as evidence for that key
    def route_to_real(request: httpx.Request) -> httpx.Request:
        if request.url.path == "/v1/attestation" and "nonce" in request.url.params:
            url = request.url.copy_remove_param("key_id")
            return httpx.Request(request.method, url, headers=request.headers)
        return request

    def relabel(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/v1/attestation" and "nonce" in request.url.params:
            doc = json.loads(response.content)
            doc["key_id"] = SWAP.key_id.hex
            doc["public_key_jwk"] = SWAP.public_key.to_jwk()
            return httpx.Response(200, json=doc)
        return on_listing(_swap_key)(request, response)

    recorder = Recorder(harness.apps, relabel, route_to_real)
    with (
        sync_client(harness, recorder, fresh_nonce=True) as c,
        pytest.raises(AttestationFailed, match="did not verify the evidence") as info,
    ):
        c.classify([jpeg_bytes(14)])
    assert any("REPORT_DATA" in reason for reason in info.value.reasons), info.value.reasons
    recorder.assert_no_image_sent([jpeg_bytes(14)])
    assert "POST attest.test/v1/verify" in recorder.paths()


def test_fresh_nonce_refuses_replayed_evidence(harness: Harness) -> None:
    # the gateway answers every nonce with evidence it obtained for an old nonce
    old: dict[str, Any] = {}

    def replay(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/v1/attestation" and "nonce" in request.url.params:
            doc = json.loads(response.content)
            if not old:
                old.update(copy.deepcopy(doc))
                return response
            stale = copy.deepcopy(old)
            stale["nonce"] = doc["nonce"]
            return httpx.Response(200, json=stale)
        return response

    recorder = Recorder(harness.apps, replay)
    with sync_client(harness, recorder, fresh_nonce=True) as c:
        c.attest()  # the first one is genuine
        with pytest.raises(AttestationFailed, match="did not verify the evidence"):
            c.attest(force=True)
    assert recorder.infers() == 0


def test_fresh_nonce_refuses_evidence_for_another_key(harness: Harness) -> None:
    def other(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/v1/attestation" and "nonce" in request.url.params:
            doc = json.loads(response.content)
            doc["key_id"] = SWAP.key_id.hex
            return httpx.Response(200, json=doc)
        return response

    recorder = Recorder(harness.apps, other)
    with (
        sync_client(harness, recorder, fresh_nonce=True) as c,
        pytest.raises(ProtocolError, match="evidence for key"),
    ):
        c.classify([jpeg_bytes(15)])
    recorder.assert_no_image_sent([jpeg_bytes(15)])


# after attestation: refusals and broken answers


def test_sealed_failure_is_server_refused(harness: Harness) -> None:
    recorder = Recorder(harness.apps)
    wide = np.zeros((8, 4200), np.uint8)  # wider than the enclave's 4096-pixel limit
    with (
        sync_client(harness, recorder, jpeg=JpegOptions(max_side=None)) as c,
        pytest.raises(ServerRefused, match="invalid-image") as info,
    ):
        c.classify_one(wide)
    assert info.value.where == "the enclave" and info.value.status == 200
    assert recorder.infers() == 1


def test_tampered_answer_is_a_protocol_error(harness: Harness) -> None:
    def flip(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/v1/infer":
            body = bytearray(response.content)
            body[-1] ^= 1
            return httpx.Response(200, content=bytes(body), headers=response.headers)
        return response

    with (
        sync_client(harness, Recorder(harness.apps, flip)) as c,
        pytest.raises(ProtocolError, match="does not open \\(decryption-failed\\)"),
    ):
        c.classify_one(jpeg_bytes(16))


def test_gateway_refusal_and_oversized_answer(harness: Harness) -> None:
    def limited(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/v1/infer":
            problem = {"type": "urn:pmc2:gateway:rate-limited", "status": 429, "title": "x"}
            return httpx.Response(
                429,
                content=json.dumps(problem).encode(),
                headers={"content-type": "application/problem+json", "retry-after": "3"},
            )
        return response

    with (
        sync_client(harness, Recorder(harness.apps, limited)) as c,
        pytest.raises(ServerRefused) as info,
    ):
        c.classify_one(jpeg_bytes(17))
    assert info.value.code == "rate-limited" and info.value.retry_after == 3

    def huge(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/v1/infer":
            return httpx.Response(200, content=b"\x00" * 70_000, headers=response.headers)
        return response

    with (
        sync_client(harness, Recorder(harness.apps, huge)) as c,
        pytest.raises(ProtocolError, match="more than 65536 bytes"),
    ):
        c.classify_one(jpeg_bytes(18))

    def html(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/v1/infer":
            return httpx.Response(502, content=b"<html>bad gateway</html>")
        return response

    with (
        sync_client(harness, Recorder(harness.apps, html)) as c,
        pytest.raises(ProtocolError, match=r"HTTP 502 .* without a problem document"),
    ):
        c.classify_one(jpeg_bytes(19))


def test_persistent_unknown_key_is_refused(harness: Harness) -> None:
    def always_421(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/v1/infer":
            problem = {
                "type": "urn:pmc2:sealed:unknown-key",
                "status": 421,
                "title": "unknown key id",
            }
            return httpx.Response(
                421,
                content=json.dumps(problem).encode(),
                headers={"content-type": "application/problem+json"},
            )
        return response

    recorder = Recorder(harness.apps, always_421)
    with sync_client(harness, recorder) as c, pytest.raises(ServerRefused, match="unknown-key"):
        c.classify_one(jpeg_bytes(20))
    assert recorder.infers() == 1  # the same key again: no blind retry
    assert recorder.paths().count("GET gateway.test/v1/attestation") == 2


def test_a_421_does_not_make_the_client_trust_another_key(harness: Harness) -> None:
    # the gateway answers 421 and then offers its own key: refused, nothing re-sent
    listings = [0]

    def evil(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/v1/infer":
            problem = {
                "type": "urn:pmc2:sealed:unknown-key",
                "status": 421,
                "title": "unknown key id",
                "current_key_id": SWAP.key_id.hex,
            }
            return httpx.Response(
                421,
                content=json.dumps(problem).encode(),
                headers={"content-type": "application/problem+json"},
            )
        if request.url.path == "/v1/attestation":
            listings[0] += 1
            if listings[0] > 1:
                return on_listing(_swap_key)(request, response)
        return response

    recorder = Recorder(harness.apps, evil)
    with (
        sync_client(harness, recorder) as c,
        pytest.raises(AttestationFailed, match="token bound to key"),
    ):
        c.classify_one(jpeg_bytes(21))
    assert recorder.infers() == 1 and listings[0] == 2


def test_signing_key_rotation(harness: Harness) -> None:
    # an unpinned client (development) fetches the key set again for a token signed by a
    # key it has not seen; a client pinning only the old key refuses such a token
    old = harness.thumbprints()
    with pytest.warns(InsecureClientWarning):
        anything = JwksPin.insecure_any()
    loose, strict = Recorder(harness.apps), Recorder(harness.apps)
    with (
        sync_client(harness, loose, jwks_pin=anything, fresh_nonce=True) as a,
        sync_client(harness, strict, jwks_pin=JwksPin(thumbprints=old), fresh_nonce=True) as b,
    ):
        a.attest()
        b.attest()
        new = harness.stack.env.admin.rotate_signing_key()
        assert new not in old
        assert a.attest(force=True).fresh
        with pytest.raises(AttestationFailed, match=f"signed by key {new}, which is not a pinned"):
            b.attest(force=True)
    assert loose.paths().count("GET attest.test/.well-known/jwks.json") == 2
    assert strict.paths().count("GET attest.test/.well-known/jwks.json") == 2


def test_post_quantum_suite(harness: Harness) -> None:
    # The enclave app boots only with X25519 keys (key release needs them), so an HPKE-9
    # replica is stood in for: its key is attested by the real service (its challenge,
    # then /v1/attest with simulated evidence binding the key), behind the real gateway.
    pair = EnclaveKeyPair.generate(SUITE_MLKEM768_X25519)
    token = harness.stack.env.client.attest(harness.stack.provider, pair.public_key).token

    async def attestation(request: Request) -> Response:
        jwk = pair.public_key.to_jwk()
        return JSONResponse({"key_id": pair.key_id.hex, "token": token, "public_key_jwk": jwk})

    async def infer(request: Request) -> Response:
        opened = open_request(await request.body(), pair)
        answer = InferenceResult(
            label=7,
            top_k=(ScoredLabel(7, 800_000),),
            label_name="horse",
            sizes=BitstringSizes(batch_images=2, batch_bitstring_bytes=19, bitstring_bytes=9),
        )
        return Response(opened.seal_response(answer), media_type="application/octet-stream")

    replica = Starlette(
        routes=[
            Route("/internal/attestation", attestation, methods=["GET"]),
            Route("/internal/infer", infer, methods=["POST"]),
        ]
    )
    apps = {**harness.apps, "gateway.test": harness.new_gateway(Switch(replica))}
    with sync_client(harness, Recorder(apps), suite=SUITE_MLKEM768_X25519) as c:
        result = c.classify_one(jpeg_bytes(22))
        assert c.attestation is not None and c.attestation.suite.name == "HPKE-9"
    assert (result.label, result.label_name, result.key_id) == (7, "horse", pair.key_id.hex)
    assert result.bytes_sent.envelope > 1120  # the X-Wing encapsulated key
    sent = result.bytes_sent
    assert (sent.bitstring, sent.bitstring_batch, sent.batch_images) == (9, 19, 2)
    assert (sent.bitstring_per_image, sent.bitstring_batch_share) == (9.0, 9.5)
    with (
        sync_client(harness, Recorder(apps)) as default,
        pytest.raises(PolicyMismatch, match=r"expected one of \[HPKE-3\].*HPKE-9"),
    ):
        default.attest()


# --- units: pins, expectations, images, API shape ------------------------------------------


def test_thumbprint_rfc7638_example() -> None:
    # RFC 7638 section 3.1
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
        "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65Y"
        "GjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt"
        "-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    key = ECKey.generate_key("P-384")
    assert jwk_thumbprint(key.as_dict(private=False)) == key.thumbprint()
    with pytest.raises(ValueError, match="key type"):
        jwk_thumbprint({"kty": "oct", "k": "AA"})


def test_pins_and_key_selection() -> None:
    good = ECKey.generate_key("P-384")
    public = dict(good.as_dict(private=False))
    print_ = good.thumbprint()
    pin = JwksPin(thumbprints=[print_])
    assert select_pinned_keys({"keys": [public]}, pin)["keys"][0]["kid"] == print_
    # a private key, another algorithm, a wrong kid, another curve: not used
    for bad in (
        dict(good.as_dict(private=True)),
        {**public, "alg": "ES256"},
        {**public, "kid": "someone-else"},
        {**public, "use": "enc"},
    ):
        with pytest.raises(AttestationFailed, match="matches the pin"):
            select_pinned_keys({"keys": [bad]}, pin)
    p256 = dict(ECKey.generate_key("P-256").as_dict(private=False))
    with pytest.raises(AttestationFailed, match="matches the pin"):
        select_pinned_keys({"keys": [p256]}, JwksPin(thumbprints=[jwk_thumbprint(p256)]))
    with pytest.raises(AttestationFailed, match="not a JWKS"):
        select_pinned_keys({"keys": "x"}, pin)
    with pytest.raises(AttestationFailed, match="not a JWKS"):
        select_pinned_keys({"keys": [public] * 65}, pin)
    # a pinned key set: its own keys
    pinned = JwksPin(key_set={"keys": [public]})
    assert pinned.thumbprints == {print_} and not pinned.fetches
    bad_args: dict[str, Any]
    for bad_args in (
        {},
        {"thumbprints": ["short"]},
        {"key_set": {"keys": []}},
        {"key_set": {"keys": [public]}, "thumbprints": [ECKey.generate_key("P-384").thumbprint()]},
    ):
        with pytest.raises(ValueError):
            JwksPin(**bad_args)
    with pytest.warns(InsecureClientWarning, match="not pinned"):
        anything = JwksPin.insecure_any()
    assert select_pinned_keys({"keys": [public]}, anything)["keys"][0]["kid"] == print_


def test_pinned_key_set_with_thumbprints_uses_only_those_keys() -> None:
    # thumbprints given with a key set narrow it: the other keys of the set are not trusted
    wanted = dict(ECKey.generate_key("P-384").as_dict(private=False))
    other = dict(ECKey.generate_key("P-384").as_dict(private=False))
    pin = JwksPin(key_set={"keys": [wanted, other]}, thumbprints=[jwk_thumbprint(wanted)])
    assert pin.thumbprints == {jwk_thumbprint(wanted)}
    assert pin.key_set is not None
    chosen = select_pinned_keys(pin.key_set, pin)["keys"]
    assert [k["kid"] for k in chosen] == [jwk_thumbprint(wanted)]
    with pytest.raises(AttestationFailed, match="matches the pin"):
        select_pinned_keys({"keys": [other]}, pin)


def test_pinned_key_set_needs_no_fetch(harness: Harness) -> None:
    recorder = Recorder(harness.apps)
    jwks = harness.stack.env.client.jwks()
    with sync_client(harness, recorder, jwks_pin=JwksPin(key_set=jwks)) as c:
        c.attest()
    assert recorder.paths() == ["GET gateway.test/v1/attestation"]


def test_expectations_validation() -> None:
    assert Expectations.any_registered() == Expectations()
    bad: dict[str, Any]
    for bad in (
        {"measurements": ["zz"]},
        {"measurements": [b"short"]},
        {"measurements": []},
        {"launch_config_digests": ["aa" * 48]},
        {"model_bundle_digests": ["md5:00"]},
    ):
        with pytest.raises(ValueError):
            Expectations(**bad)
    e = Expectations(measurements="a5" * 48, model_bundle_digests="SHA384:" + "AB" * 48)
    assert e.measurements == frozenset({bytes.fromhex("a5" * 48)})
    assert e.model_bundle_digests == frozenset({"sha384:" + "ab" * 48})
    with pytest.warns(InsecureClientWarning, match="simulated platform"):
        Expectations(allow_insecure_simulated_platform=True)


def test_config_validation() -> None:
    pin = JwksPin(thumbprints=[ECKey.generate_key("P-384").thumbprint()])
    base: dict[str, Any] = {"gateway_url": GATEWAY, "attestation_url": ATTEST, "jwks_pin": pin}
    ClientConfig(**base)
    for bad in (
        {"gateway_url": "ftp://x"},
        {"gateway_url": "http://gw/?q=1"},
        {"top_k": 0},
        {"top_k": True},
        {"timeout_s": 0},
        {"api_key": "short"},
    ):
        with pytest.raises(ValueError):
            ClientConfig(**{**base, **bad})
    with pytest.raises(TypeError):
        ClientConfig(**{**base, "jwks_pin": "x"})


def _jpeg(image: Image.Image, **kwargs: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **kwargs)
    return out.getvalue()


def test_image_preparation() -> None:
    from PIL import JpegImagePlugin

    options = JpegOptions()
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8))
    # 4:4:4 JPEG passes through; 4:2:0 is re-encoded to 4:4:4
    same = _jpeg(rgb, quality=75, subsampling=0)
    assert prepare_image(same, options).jpeg == same
    sub = prepare_image(_jpeg(rgb, quality=75, subsampling=2), options)
    assert sub.reencoded
    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(sub.jpeg))) == 0
    # greyscale JPEG passes through; trailing bytes, EXIF rotation, passthrough off: re-encoded
    grey = _jpeg(rgb.convert("L"))
    assert not prepare_image(grey, options).reencoded
    assert prepare_image(same + b"trailer", options).reencoded
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = prepare_image(_jpeg(rgb, subsampling=0, exif=exif.tobytes()), options)
    assert rotated.reencoded and rotated.size == (48, 64)
    assert prepare_image(same, JpegOptions(passthrough=False)).reencoded
    # large images are scaled down, aspect kept
    big = prepare_image(Image.new("RGB", (2000, 1000)), options)
    assert big.size == (512, 256)
    assert prepare_image(Image.new("RGB", (2000, 1000)), JpegOptions(max_side=None)).size == (
        2000,
        1000,
    )
    # arrays and modes
    assert prepare_image(np.zeros((8, 8, 4), np.uint8), options).size == (8, 8)
    assert prepare_image(Image.new("RGBA", (8, 8)), options).reencoded
    assert prepare_image(Image.new("P", (8, 8)), options).reencoded
    assert prepare_image(Image.new("I;16", (8, 8)), options).reencoded
    # quality matters
    low = prepare_image(rgb, JpegOptions(quality=20)).jpeg
    high = prepare_image(rgb, JpegOptions(quality=95)).jpeg
    assert len(low) < len(high)
    # refusals
    for bad, match in (
        (b"not an image", "not a readable image"),
        (b"", "empty"),
        (np.zeros((8, 8), np.float32), "uint8"),
        (np.zeros((8, 8, 2), np.uint8), "H x W"),
        (np.zeros((0, 8), np.uint8), "at least one pixel"),
        (Path("/nonexistent/x.jpg"), "cannot read"),
        (3.14, "not float"),
    ):
        with pytest.raises(InvalidImage, match=match):
            prepare_image(bad, options)  # type: ignore[arg-type]
    for bad_options in ({"quality": 0}, {"quality": 96}, {"max_side": 8}, {"quality": True}):
        with pytest.raises(ValueError):
            JpegOptions(**bad_options)


def test_classify_wants_a_list(harness: Harness) -> None:
    recorder = Recorder(harness.apps)
    with sync_client(harness, recorder) as c:
        for single in (
            "photo.jpg",
            b"\xff\xd8",
            Image.new("RGB", (4, 4)),
            np.zeros((4, 4), np.uint8),
        ):
            with pytest.raises(TypeError, match="classify_one"):
                c.classify(single)  # type: ignore[arg-type]
        assert c.classify([]) == []
    assert recorder.seen == []


def test_unreadable_image_is_not_sent(harness: Harness) -> None:
    recorder = Recorder(harness.apps)
    with (
        sync_client(harness, recorder) as c,
        pytest.raises(InvalidImage, match="not a readable image"),
    ):
        c.classify([b"definitely not an image"])
    assert recorder.infers() == 0


def test_public_api_and_doctests() -> None:
    assert len(client.__all__) == len(set(client.__all__))
    for name in client.__all__:
        assert hasattr(client, name), name
    names = ["_cli", "_client", "_errors", "_flow", "_images", "_results", "_trust"]
    modules = [client, *(importlib.import_module(f"client.{n}") for n in names)]
    attempted = 0
    for module in modules:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted >= 20


def test_insecure_options_warn() -> None:
    with pytest.warns(InsecureClientWarning):
        Expectations(allow_insecure_simulated_platform=True)
    with pytest.warns(InsecureClientWarning):
        JwksPin(insecure_unpinned=True)


def test_default_mode_refuses_a_token_for_client_nonce_evidence(harness: Harness) -> None:
    # A gateway keeps evidence it once obtained for some nonce of its choosing and has
    # the attestation service verify it again (/v1/verify) whenever it likes: each token
    # is new, the evidence is not. In the default mode only tokens for evidence that
    # answered the service's own single-use challenge count as fresh.
    with sync_client(harness, Recorder(harness.apps), fresh_nonce=True) as c:
        replayable = c.attest()
    assert replayable.claims["pmc2.nonce_source"] == "client"

    def serve_replayed(doc: dict[str, Any]) -> None:
        doc["attestations"][0]["token"] = replayable.token

    recorder = Recorder(harness.apps, on_listing(serve_replayed))
    with (
        sync_client(harness, recorder) as c,
        pytest.raises(AttestationFailed, match="nonce source is 'client', not 'service'"),
    ):
        c.classify([jpeg_bytes(21)])
    recorder.assert_no_image_sent([jpeg_bytes(21)])
