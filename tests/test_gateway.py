"""Gateway: routing by key id, attestation and evidence, limits, rate limits, timeouts,
back-pressure, upstream failures, OpenAPI coverage, metrics, access log, CLI.

The enclave replicas are fake starlette apps holding real HPKE keys (``FakeReplica``),
reached through an injected httpx transport.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import (
    ACCESS_LOGGER,
    ROUTES,
    ConfigError,
    GatewayConfig,
    RateLimit,
    ReplicaAttestation,
    api_key_digest,
    create_app,
)
from gateway._ratelimit import TokenBuckets
from sealed import (
    SUITE_MLKEM768_X25519,
    EnclaveKeyPair,
    EnclavePublicKey,
    InferenceResult,
    RequestOptions,
    ScoredLabel,
    SealedError,
    SealedRequest,
    open_request,
    seal_request,
)

T = TypeVar("T")
OCTET = {"Content-Type": "application/octet-stream"}
FAKE_TOKEN = "eyJhbGciOiJFUzM4NCJ9.eyJmYWtlIjp0cnVlfQ.c2lnbmF0dXJl"
NONCE = "q83vEjRWeJCrze8SNFZ4kA"  # 16 bytes, base64url


def make_jpeg(seed: int = 7) -> bytes:
    image = Image.new("RGB", (32, 32))
    image.putdata([((i * seed) % 256, (i * 3) % 256, (i * 11 + seed) % 256) for i in range(1024)])
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


class FakeReplica:
    """An enclave replica's internal API (docs/gateway_api.md 4) with a real key."""

    def __init__(self, name: str, suite: Any = None) -> None:
        self.name = name
        self.key = EnclaveKeyPair.generate() if suite is None else EnclaveKeyPair.generate(suite)
        self.mode = "ok"
        self.attestation_status = 200
        self.delay = 0.0
        self.gate: asyncio.Event | None = None
        self.entered = 0
        self.infers = 0
        self.opened: list[bytes] = []  # JPEGs decrypted inside the "enclave"
        self.evidence_nonce_echo: str | None = None
        self.app = Starlette(
            routes=[
                Route("/internal/attestation", self.attestation, methods=["GET"]),
                Route("/internal/evidence", self.evidence, methods=["GET"]),
                Route("/internal/infer", self.infer, methods=["POST"]),
            ]
        )

    @property
    def url(self) -> str:
        return f"http://{self.name}:8403"

    @property
    def key_id(self) -> str:
        return self.key.key_id.hex

    def restart(self) -> None:
        self.key = EnclaveKeyPair.generate(self.key.suite)

    async def attestation(self, request: Request) -> Response:
        if self.attestation_status != 200:
            return Response(b"down", status_code=self.attestation_status)
        return JSONResponse(
            {
                "key_id": self.key_id,
                "token": FAKE_TOKEN,
                "public_key_jwk": self.key.public_key.to_jwk(),
            }
        )

    async def evidence(self, request: Request) -> Response:
        nonce = request.query_params.get("nonce", "")
        return JSONResponse(
            {
                "key_id": self.key_id,
                "nonce": self.evidence_nonce_echo or nonce,
                "evidence": {"report": "AAAA", "certificates": ["BBBB"]},
            }
        )

    async def infer(self, request: Request) -> Response:
        self.entered += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        body = await request.body()
        if self.mode == "500":
            return Response(b"boom", status_code=500)
        if self.mode == "garbage":
            return Response(b"<html>", status_code=200, media_type="text/html")
        if self.mode == "huge":
            return Response(b"\x00" * 100_000, media_type="application/octet-stream")
        if self.mode == "busy":
            return Response(
                json.dumps({"type": "urn:pmc2:enclave:busy", "title": "busy", "status": 503}),
                status_code=503,
                media_type="application/problem+json",
                headers={"Retry-After": "3"},
            )
        try:
            opened = open_request(body, self.key)
        except SealedError as exc:
            return Response(
                json.dumps(exc.to_problem()),
                status_code=exc.http_status,
                media_type="application/problem+json",
            )
        self.infers += 1
        self.opened.append(opened.jpeg)
        answer = InferenceResult(
            label=3, top_k=(ScoredLabel(3, 912345), ScoredLabel(5, 40000)), label_name="cat"
        )
        return Response(opened.seal_response(answer), media_type="application/octet-stream")


class Router(httpx.AsyncBaseTransport):
    """Routes requests to the fake replica whose host they name; records everything."""

    def __init__(self, replicas: list[FakeReplica]) -> None:
        self.replicas = {r.name: r for r in replicas}
        self.down: set[str] = set()
        self.seen: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self.seen.append(
            str(request.url).encode() + b"\n" + repr(request.headers.raw).encode() + b"\n" + body
        )
        host = request.url.host
        if host in self.down or host not in self.replicas:
            raise httpx.ConnectError("connection refused", request=request)
        inner = httpx.ASGITransport(app=self.replicas[host].app)
        response = await inner.handle_async_request(request)
        content = await response.aread()
        self.seen.append(repr(response.headers.raw).encode() + b"\n" + content)
        return httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gateway(replicas: list[FakeReplica], **kw: Any) -> tuple[Starlette, Router]:
    router = Router(replicas)
    kw.setdefault("rate_limit", RateLimit(rate_per_s=1000.0, burst=1000))
    config = GatewayConfig(replicas=tuple(r.url for r in replicas), transport=router, **kw)
    return create_app(config), router


def run(
    app: Any,
    body: Callable[[httpx.AsyncClient], Awaitable[T]],
    *,
    client: tuple[str, int] = ("203.0.113.7", 5000),
) -> T:
    async def main() -> T:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            return await body(c)

    return asyncio.run(main())


async def attest_and_seal(
    client: httpx.AsyncClient, jpeg: bytes, key_id: str | None = None
) -> SealedRequest:
    response = await client.get("/v1/attestation")
    assert response.status_code == 200, response.text
    entries = response.json()["attestations"]
    entry = entries[0] if key_id is None else next(e for e in entries if e["key_id"] == key_id)
    public = EnclavePublicKey.from_jwk(entry["public_key_jwk"])
    assert public.key_id.hex == entry["key_id"]
    return seal_request(public, jpeg, RequestOptions(top_k=2, request_id="req-secret-0001"))


def problem(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = response.json()
    assert doc["type"] == type_
    assert doc["status"] == status
    return doc


# --- the happy path -------------------------------------------------------------------


def test_attest_seal_infer_round_trip() -> None:
    replica = FakeReplica("replica-0")
    app, _ = gateway([replica])

    async def go(client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/attestation")
        assert response.headers["cache-control"] == "no-store"
        assert response.json() == {
            "attestations": [
                {
                    "key_id": replica.key_id,
                    "token": FAKE_TOKEN,
                    "public_key_jwk": replica.key.public_key.to_jwk(),
                }
            ]
        }
        sealed = await attest_and_seal(client, make_jpeg())
        response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/octet-stream"
        assert len(response.headers["x-request-id"]) == 16
        answer = sealed.open_response(response.content)
        assert isinstance(answer, InferenceResult)
        assert (answer.label, answer.label_name, answer.request_id) == (3, "cat", "req-secret-0001")

    run(app, go)
    assert replica.infers == 1


def test_post_quantum_suite_routes_too() -> None:
    replica = FakeReplica("replica-0", SUITE_MLKEM768_X25519)
    app, _ = gateway([replica])

    async def go(client: httpx.AsyncClient) -> int:
        sealed = await attest_and_seal(client, make_jpeg())
        response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
        assert isinstance(sealed.open_response(response.content), InferenceResult)
        return response.status_code

    assert run(app, go) == 200


def test_routes_by_key_id_across_replicas() -> None:
    replicas = [FakeReplica("replica-0"), FakeReplica("replica-1"), FakeReplica("replica-2")]
    app, _ = gateway(replicas)

    async def go(client: httpx.AsyncClient) -> None:
        listed = (await client.get("/v1/attestation")).json()["attestations"]
        assert [e["key_id"] for e in listed] == [r.key_id for r in replicas]
        for replica in (replicas[2], replicas[0], replicas[2], replicas[1]):
            sealed = await attest_and_seal(client, make_jpeg(), replica.key_id)
            response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
            assert isinstance(sealed.open_response(response.content), InferenceResult)
        one = await client.get("/v1/attestation", params={"key_id": replicas[1].key_id})
        assert [e["key_id"] for e in one.json()["attestations"]] == [replicas[1].key_id]

    run(app, go)
    assert [r.infers for r in replicas] == [1, 1, 2]


def test_enclave_restart_unknown_key_then_reattest() -> None:
    replica = FakeReplica("replica-0")
    clock = Clock()
    app, _ = gateway([replica], clock=clock, attestation_ttl_s=30.0, min_refresh_interval_s=1.0)

    async def go(client: httpx.AsyncClient) -> None:
        old = await attest_and_seal(client, make_jpeg())
        old_id = replica.key_id
        replica.restart()
        # the cache still maps the old key to the replica: the replica says unknown key,
        # the gateway refreshes and tells the client the current key id
        response = await client.post("/v1/infer", content=old.envelope, headers=OCTET)
        doc = problem(response, 421, "urn:pmc2:sealed:unknown-key")
        assert doc["key_id"] == old_id
        assert doc["current_key_id"] == replica.key_id
        assert doc["current_key_ids"] == [replica.key_id]
        # a stranger's key id: one refresh at most per interval, then 421
        stranger = seal_request(EnclaveKeyPair.generate().public_key, b"\xff\xd8\xff\xd9")
        response = await client.post("/v1/infer", content=stranger.envelope, headers=OCTET)
        problem(response, 421, "urn:pmc2:sealed:unknown-key")
        fresh = await attest_and_seal(client, make_jpeg())
        response = await client.post("/v1/infer", content=fresh.envelope, headers=OCTET)
        assert isinstance(fresh.open_response(response.content), InferenceResult)

    run(app, go)


def test_refresh_discovers_a_new_key_before_forwarding() -> None:
    replica = FakeReplica("replica-0")
    clock = Clock()
    app, _ = gateway([replica], clock=clock, min_refresh_interval_s=1.0)

    async def go(client: httpx.AsyncClient) -> int:
        await client.get("/v1/attestation")
        replica.restart()
        clock.now += 5  # past the refresh interval, within the TTL
        sealed = seal_request(replica.key.public_key, make_jpeg())
        response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
        return response.status_code

    assert run(app, go) == 200


# --- evidence -------------------------------------------------------------------------


def test_evidence_for_a_client_nonce() -> None:
    replicas = [FakeReplica("replica-0"), FakeReplica("replica-1")]
    app, router = gateway(replicas)

    async def go(client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/attestation", params={"nonce": NONCE})
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["nonce"] == NONCE and doc["evidence"]["report"] == "AAAA"
        response = await client.get(
            "/v1/attestation", params={"nonce": NONCE, "key_id": replicas[1].key_id}
        )
        assert response.json()["key_id"] == replicas[1].key_id
        for bad in ("short", NONCE + "=", "q83vEjRWeJCrze8SNFZ4kB", "A" * 90, "ab+/" * 8):
            response = await client.get("/v1/attestation", params={"nonce": bad})
            problem(response, 400, "urn:pmc2:gateway:invalid-nonce")
        response = await client.get("/v1/attestation?nonce=" + NONCE + "&nonce=" + NONCE)
        problem(response, 400, "urn:pmc2:gateway:malformed-request")
        response = await client.get("/v1/attestation?foo=1")
        problem(response, 400, "urn:pmc2:gateway:malformed-request")
        response = await client.get("/v1/attestation", params={"key_id": "XYZ"})
        problem(response, 400, "urn:pmc2:gateway:malformed-request")
        response = await client.get("/v1/attestation", params={"nonce": NONCE, "key_id": "0" * 32})
        problem(response, 421, "urn:pmc2:sealed:unknown-key")
        replicas[0].evidence_nonce_echo = "AAAAAAAAAAAAAAAAAAAAAA"
        replicas[1].evidence_nonce_echo = "AAAAAAAAAAAAAAAAAAAAAA"
        response = await client.get("/v1/attestation", params={"nonce": NONCE})
        problem(response, 502, "urn:pmc2:gateway:upstream-error")

    run(app, go)
    assert any(b"/internal/evidence?nonce=" + NONCE.encode() in s for s in router.seen)


# --- limits ---------------------------------------------------------------------------


def test_body_limits_and_framing_errors() -> None:
    replica = FakeReplica("replica-0")
    app, _ = gateway([replica], max_envelope_bytes=4096, max_other_body_bytes=16)

    async def go(client: httpx.AsyncClient) -> None:
        sealed = await attest_and_seal(client, make_jpeg())
        assert len(sealed.envelope) <= 4096
        big = seal_request(replica.key.public_key, b"\xff\xd8" + b"\x00" * 5000)
        response = await client.post("/v1/infer", content=big.envelope, headers=OCTET)
        problem(response, 413, "urn:pmc2:sealed:oversized")

        async def chunks() -> Any:
            for _ in range(5):
                yield b"\x00" * 1000

        response = await client.post("/v1/infer", content=chunks(), headers=OCTET)
        problem(response, 413, "urn:pmc2:sealed:oversized")
        response = await client.request("GET", "/healthz", content=b"x" * 17)
        problem(response, 413, "urn:pmc2:gateway:body-too-large")
        response = await client.post(
            "/v1/infer", content=sealed.envelope, headers={**OCTET, "Content-Length": "9x"}
        )
        problem(response, 400, "urn:pmc2:gateway:malformed-request")
        response = await client.post("/v1/infer", content=b"", headers=OCTET)
        problem(response, 400, "urn:pmc2:sealed:malformed")
        response = await client.post("/v1/infer", content=b"GET / HTTP/1.1", headers=OCTET)
        problem(response, 400, "urn:pmc2:sealed:malformed")
        bad_version = sealed.envelope[:4] + b"\x02" + sealed.envelope[5:]
        response = await client.post("/v1/infer", content=bad_version, headers=OCTET)
        problem(response, 400, "urn:pmc2:sealed:unsupported-version")
        bad_suite = sealed.envelope[:6] + b"\x00\x99" + sealed.envelope[8:]
        response = await client.post("/v1/infer", content=bad_suite, headers=OCTET)
        problem(response, 400, "urn:pmc2:sealed:unsupported-suite")
        response = await client.post("/v1/infer", content=sealed.envelope + b"\x00", headers=OCTET)
        problem(response, 400, "urn:pmc2:sealed:malformed")
        response = await client.post(
            "/v1/infer", content=sealed.envelope, headers={"Content-Type": "image/jpeg"}
        )
        problem(response, 415, "urn:pmc2:gateway:unsupported-media-type")
        # tampered ciphertext: only the enclave can tell; its problem passes through
        tampered = sealed.envelope[:-1] + bytes([sealed.envelope[-1] ^ 1])
        response = await client.post("/v1/infer", content=tampered, headers=OCTET)
        problem(response, 400, "urn:pmc2:sealed:decryption-failed")
        response = await client.get("/nope")
        problem(response, 404, "urn:pmc2:gateway:not-found")
        response = await client.get("/v1/infer")
        problem(response, 405, "urn:pmc2:gateway:method-not-allowed")

    run(app, go)
    assert replica.infers == 0


def test_rate_limits_per_ip_and_api_key() -> None:
    replica = FakeReplica("replica-0")
    clock = Clock()
    good_key = "k" * 24
    app, _ = gateway(
        [replica],
        clock=clock,
        rate_limit=RateLimit(rate_per_s=0.5, burst=2),
        api_keys=frozenset({api_key_digest(good_key)}),
        api_key_rate_limit=RateLimit(rate_per_s=100.0, burst=3),
    )

    async def go(client: httpx.AsyncClient) -> None:
        assert (await client.get("/v1/attestation")).status_code == 200
        assert (await client.get("/v1/attestation")).status_code == 200
        response = await client.get("/v1/attestation")
        problem(response, 429, "urn:pmc2:gateway:rate-limited")
        assert response.headers["retry-after"] == "2"
        sealed = seal_request(replica.key.public_key, make_jpeg())
        response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
        problem(response, 429, "urn:pmc2:gateway:rate-limited")
        # a known API key has its own bucket
        keyed = {"X-API-Key": good_key}
        statuses = [
            (await client.get("/v1/attestation", headers=keyed)).status_code for _ in "abcd"
        ]
        assert statuses == [200, 200, 200, 429]
        response = await client.get("/v1/attestation", headers={"X-API-Key": "unknown-key-0000"})
        problem(response, 401, "urn:pmc2:gateway:invalid-api-key")
        # health, metrics and the OpenAPI document are not rate-limited
        for path in ("/healthz", "/metrics", "/openapi.json"):
            assert (await client.get(path)).status_code == 200
        clock.now += 2.0
        assert (await client.get("/v1/attestation")).status_code == 200

    run(app, go)


def test_token_bucket_table_is_bounded() -> None:
    clock = Clock()
    buckets = TokenBuckets(clock, max_keys=3)
    limit = RateLimit(rate_per_s=1.0, burst=1)
    assert buckets.take("a", limit) == 0.0
    assert buckets.take("a", limit) == pytest.approx(1.0)
    for key in "bcd":
        buckets.take(key, limit)
    assert len(buckets) == 3
    assert buckets.take("a", limit) == 0.0  # evicted, back full
    clock.now += 0.25
    assert buckets.take("a", limit) == pytest.approx(0.75)
    assert TokenBuckets.retry_after(0.01) == 1 and TokenBuckets.retry_after(2.5) == 3


def test_back_pressure_503_with_retry_after() -> None:
    replica = FakeReplica("replica-0")
    app, _ = gateway([replica], max_in_flight_per_replica=2, retry_after_s=4)

    async def go(client: httpx.AsyncClient) -> list[int]:
        replica.gate = asyncio.Event()
        sealed = [seal_request(replica.key.public_key, make_jpeg()) for _ in range(3)]
        await client.get("/v1/attestation")
        tasks = [
            asyncio.create_task(client.post("/v1/infer", content=s.envelope, headers=OCTET))
            for s in sealed[:2]
        ]
        while replica.entered < 2:
            await asyncio.sleep(0.005)
        response = await client.post("/v1/infer", content=sealed[2].envelope, headers=OCTET)
        problem(response, 503, "urn:pmc2:gateway:overloaded")
        assert response.headers["retry-after"] == "4"
        metrics = (await client.get("/metrics")).text
        assert 'pmc2_gateway_in_flight{replica="0"} 2.0' in metrics
        replica.gate.set()
        done = await asyncio.gather(*tasks)
        # the slots are free again
        again = await client.post("/v1/infer", content=sealed[2].envelope, headers=OCTET)
        return [r.status_code for r in done] + [again.status_code]

    assert run(app, go) == [200, 200, 200]


def test_timeouts() -> None:
    replica = FakeReplica("replica-0")
    app, _ = gateway([replica], upstream_timeout_s=0.05)

    async def go(client: httpx.AsyncClient) -> None:
        sealed = await attest_and_seal(client, make_jpeg())
        replica.delay = 1.0
        response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
        problem(response, 504, "urn:pmc2:gateway:upstream-timeout")

    run(app, go)

    replica = FakeReplica("replica-0")
    app, _ = gateway([replica], upstream_timeout_s=5.0, request_timeout_s=0.05)

    async def whole(client: httpx.AsyncClient) -> None:
        sealed = seal_request(replica.key.public_key, make_jpeg())
        replica.delay = 1.0
        response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
        problem(response, 504, "urn:pmc2:gateway:timeout")

    run(app, whole)


def test_upstream_failures() -> None:
    replica = FakeReplica("replica-0")
    clock = Clock()
    app, router = gateway([replica], clock=clock)

    async def go(client: httpx.AsyncClient) -> None:
        sealed = await attest_and_seal(client, make_jpeg())
        for mode in ("500", "garbage", "huge"):
            replica.mode = mode
            response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
            problem(response, 502, "urn:pmc2:gateway:upstream-error")
        replica.mode = "busy"
        response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
        problem(response, 503, "urn:pmc2:enclave:busy")
        assert response.headers["retry-after"] == "3"
        replica.mode = "ok"
        router.down.add("replica-0")
        response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
        problem(response, 502, "urn:pmc2:gateway:upstream-error")
        # the replica is gone from the registry now: no attested replica
        response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
        problem(response, 503, "urn:pmc2:gateway:no-attested-replica")
        problem(await client.get("/v1/attestation"), 503, "urn:pmc2:gateway:no-attested-replica")
        health = await client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        # it comes back: served again
        router.down.clear()
        clock.now += 1.5  # past the minimum refresh interval
        response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
        assert response.status_code == 200

    run(app, go)


def test_bad_replica_attestations_are_not_published() -> None:
    good, bad = FakeReplica("replica-0"), FakeReplica("replica-1")
    bad.attestation_status = 500
    app, _ = gateway([good, bad])

    async def go(client: httpx.AsyncClient) -> dict[str, Any]:
        listed = (await client.get("/v1/attestation")).json()["attestations"]
        assert [e["key_id"] for e in listed] == [good.key_id]
        health = await client.get("/healthz")
        result: dict[str, Any] = health.json()
        return result

    assert run(app, go) == {
        "status": "ok",
        "replicas": 2,
        "attested": 1,
        "key_ids": [good.key_id],
    }


def test_replica_attestation_validation() -> None:
    key = EnclaveKeyPair.generate()
    jwk = key.public_key.to_jwk()
    ok = {"key_id": key.key_id.hex, "token": FAKE_TOKEN, "public_key_jwk": jwk}
    assert ReplicaAttestation.from_json(json.dumps(ok).encode()).key_id == key.key_id.hex
    other = EnclaveKeyPair.generate().key_id.hex
    for bad in (
        {**ok, "key_id": other},
        {**ok, "key_id": "ABC"},
        {**ok, "token": "has space"},
        {**ok, "public_key_jwk": {**jwk, "d": "secret"}},
        {**ok, "public_key_jwk": []},
        {**ok, "extra": 1},
    ):
        with pytest.raises(Exception, match=r".") as info:
            ReplicaAttestation.from_json(json.dumps(bad).encode())
        assert type(info.value).__name__ == "ReplicaError"


# --- OpenAPI ----------------------------------------------------------------------------


def test_openapi_documents_every_route() -> None:
    app, _ = gateway([FakeReplica("replica-0")])

    async def go(client: httpx.AsyncClient) -> dict[str, Any]:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        doc: dict[str, Any] = response.json()
        return doc

    doc = run(app, go)
    assert doc["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert documented == set(ROUTES)
    served = {
        (method, route.path)  # type: ignore[attr-defined]
        for route in app.routes
        for method in route.methods - {"HEAD"}  # type: ignore[attr-defined]
    }
    assert served == set(ROUTES)
    for item in doc["paths"].values():
        for operation in item.values():
            assert operation["operationId"] and operation["responses"]
    infer = doc["paths"]["/v1/infer"]["post"]["responses"]
    assert {"200", "400", "401", "413", "415", "421", "429", "502", "503", "504"} <= set(infer)
    att = doc["paths"]["/v1/attestation"]["get"]["responses"]
    assert {"200", "400", "401", "421", "429", "502", "503", "504"} <= set(att)

    def refs(value: Any) -> list[str]:
        if isinstance(value, dict):
            own = [value["$ref"]] if "$ref" in value else []
            return own + [r for v in value.values() for r in refs(v)]
        if isinstance(value, list):
            return [r for v in value for r in refs(v)]
        return []

    for ref in refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict)


# --- garbage -------------------------------------------------------------------------------


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    path=st.sampled_from([p for _, p in ROUTES] + ["/", "/v1", "/internal/infer", "/v1/infer/"]),
    query=st.text(max_size=40),
    body=st.binary(max_size=300),
    headers=st.dictionaries(
        st.sampled_from(
            ["content-type", "x-api-key", "authorization", "accept", "x-forwarded-for"]
        ),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
        max_size=3,
    ),
    prefix=st.booleans(),
)
def test_garbage_never_500(
    method: str,
    path: str,
    query: str,
    body: bytes,
    headers: dict[str, str],
    prefix: bool,
) -> None:
    replica = FakeReplica("replica-0")
    app, _ = gateway([replica])
    if prefix and len(body) >= 12:
        # a plausible header with the replica's key id in front of garbage
        body = b"PMC2\x01\x01\x00\x20\x00\x01\x00\x01" + replica.key.key_id.value + body

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await client.request(method, path, params=query, content=body, headers=headers)

    response = run(app, go)
    assert response.status_code < 500, response.text


# --- observability --------------------------------------------------------------------


def test_metrics_and_access_log(caplog: pytest.LogCaptureFixture) -> None:
    replica = FakeReplica("replica-0")
    app, _ = gateway([replica])

    async def go(client: httpx.AsyncClient) -> str:
        sealed = await attest_and_seal(client, make_jpeg())
        assert (await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)).is_success
        await client.post("/v1/infer", content=b"junk", headers=OCTET)
        await client.get("/v1/attestation", params={"nonce": NONCE})
        return (await client.get("/metrics")).text

    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        text = run(app, go)
    assert 'pmc2_gateway_requests_total{route="/v1/infer",status="200"} 1.0' in text
    assert 'pmc2_gateway_requests_total{route="/v1/infer",status="400"} 1.0' in text
    assert 'pmc2_gateway_rejections_total{reason="malformed"} 1.0' in text
    assert 'pmc2_gateway_upstream_duration_seconds_count{call="infer",replica="0"} 1.0' in text
    assert 'pmc2_gateway_replica_attested{replica="0"} 1.0' in text
    assert 'pmc2_gateway_attestation_refreshes_total{outcome="ok",replica="0"}' in text
    assert "pmc2_gateway_envelope_bytes_bucket" in text
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [(e["method"], e["route"], e["status"]) for e in lines] == [
        ("GET", "/v1/attestation", 200),
        ("POST", "/v1/infer", 200),
        ("POST", "/v1/infer", 400),
        ("GET", "/v1/attestation", 200),
        ("GET", "/metrics", 200),
    ]
    assert all(e["client"] == "203.0.113.7" and len(e["request_id"]) == 16 for e in lines)
    assert lines[1]["bytes_in"] > 1000 and lines[1]["bytes_out"] > 0
    assert all("nonce" not in e["path"] for e in lines)


# --- configuration and CLI ---------------------------------------------------------------


def test_config_invariants() -> None:
    with pytest.raises(ConfigError):
        GatewayConfig(replicas=())
    with pytest.raises(ConfigError):
        GatewayConfig(replicas="http://a")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        GatewayConfig(replicas=("ftp://a",))
    with pytest.raises(ConfigError):
        GatewayConfig(replicas=("http://a?x=1",))
    with pytest.raises(ConfigError):
        GatewayConfig(replicas=("http://a", "http://a/"))
    with pytest.raises(ConfigError):
        GatewayConfig(replicas=("http://a",), max_envelope_bytes=10)
    with pytest.raises(ConfigError):
        GatewayConfig(replicas=("http://a",), api_keys=frozenset({b"short"}))
    with pytest.raises(ConfigError):
        RateLimit(rate_per_s=0, burst=1)
    with pytest.raises(ConfigError):
        api_key_digest("short")
    assert GatewayConfig(replicas=("http://a:1/prefix/",)).replicas == ("http://a:1/prefix",)


def _parser() -> argparse.ArgumentParser:
    from gateway._cli import register

    parser = argparse.ArgumentParser(prog="pmc2")
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("bench").add_subparsers(dest="bench")
    register(sub, bench)
    return parser


def test_cli_config() -> None:
    from gateway._cli import config_from_args

    args = _parser().parse_args(
        [
            "gateway",
            "serve",
            "--replica",
            "http://127.0.0.1:8403",
            "--replica",
            "http://127.0.0.1:8404",
            "--rate",
            "5",
            "--burst",
            "7",
            "--max-in-flight",
            "3",
            "--timeout",
            "9",
        ]
    )
    config = config_from_args(args)
    assert config.replicas == ("http://127.0.0.1:8403", "http://127.0.0.1:8404")
    assert config.rate_limit == RateLimit(5.0, 7)
    assert config.max_in_flight_per_replica == 3 and config.upstream_timeout_s == 9.0
    assert args.port == 8400


def test_cli_refuses_bad_replica(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["gateway", "serve", "--replica", "ftp://x"])
    assert args.handler(args) == 1
    assert "replica URL" in capsys.readouterr().err


def test_openapi_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate

    from gateway import openapi_document

    document = openapi_document(GatewayConfig(replicas=("http://replica-0:8403",)))
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["components"]["securitySchemes"]["apiKey"]["name"] == "x-api-key"


def test_lifespan_refreshes_in_the_background_and_closes() -> None:
    replica = FakeReplica("replica-0")
    app, router = gateway([replica], attestation_ttl_s=0.0)

    async def go() -> list[str]:
        async with app.router.lifespan_context(app):
            for _ in range(100):
                if app.state.registry.key_ids():
                    break
                await asyncio.sleep(0.01)
            return list(app.state.registry.key_ids())

    assert asyncio.run(go()) == [replica.key_id]
    assert any(b"/internal/attestation" in s for s in router.seen)
