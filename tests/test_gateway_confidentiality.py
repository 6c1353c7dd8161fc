"""The gateway holds no key and cannot read a request.

Everything the gateway sees is recorded: every ASGI message it receives from and sends to
the client, every request it makes to a replica and every answer it gets back (the
recording transport), every log record of the process, and its metrics. None of it may
contain the client's JPEG (its SOI + APP0 marker ``FF D8 FF E0``, its ``JFIF``
identifier, or any 16-byte window of it) or the plaintext of the answer (label name,
request id). The replica, inside the trust boundary, does decrypt the JPEG (it records
what it opened): that is the control showing the JPEG really went through.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sealed import (
    SUITE_MLKEM768_X25519,
    SUITE_X25519,
    EnclavePublicKey,
    InferenceResult,
    RequestOptions,
    seal_request,
)
from tests.test_gateway import NONCE, OCTET, FakeReplica, gateway, make_jpeg


class Recorder:
    """Pure ASGI wrapper keeping every message that crosses the gateway's edge."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.blobs: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.blobs.append(repr({k: v for k, v in scope.items() if k != "app"}).encode())

        async def recording_receive() -> Message:
            message = await receive()
            self.blobs.append(message.get("body", b"") or b"")
            return message

        async def recording_send(message: Message) -> None:
            self.blobs.append(repr(message.get("headers", [])).encode())
            self.blobs.append(message.get("body", b"") or b"")
            await send(message)

        await self.app(scope, recording_receive, recording_send)


def windows(data: bytes, size: int = 16) -> set[bytes]:
    return {data[i : i + size] for i in range(0, len(data) - size + 1, 4)}


@pytest.mark.parametrize("suite", [SUITE_X25519, SUITE_MLKEM768_X25519], ids=lambda s: s.name)
def test_gateway_sees_no_jpeg_and_no_plaintext(
    suite: Any, caplog: pytest.LogCaptureFixture
) -> None:
    replicas = [FakeReplica("replica-0", suite), FakeReplica("replica-1", suite)]
    app, router = gateway(list(replicas))
    recorder = Recorder(app)
    jpegs = [make_jpeg(seed) for seed in (3, 5, 11)]
    envelopes: list[bytes] = []
    assert all(j.startswith(b"\xff\xd8\xff\xe0") and b"JFIF" in j[:16] for j in jpegs)

    async def client_session() -> str:
        transport = httpx.ASGITransport(app=recorder, client=("198.51.100.4", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            listing = (await client.get("/v1/attestation")).json()["attestations"]
            assert (await client.get("/v1/attestation", params={"nonce": NONCE})).is_success
            public = EnclavePublicKey.from_jwk(listing[0]["public_key_jwk"])
            for index, jpeg in enumerate(jpegs):
                options = RequestOptions(top_k=2, request_id=f"req-secret-{index:04d}")
                sealed = seal_request(public, jpeg, options)
                envelopes.append(sealed.envelope)
                response = await client.post("/v1/infer", content=sealed.envelope, headers=OCTET)
                answer = sealed.open_response(response.content)
                assert isinstance(answer, InferenceResult) and answer.label_name == "cat"
                assert answer.request_id == f"req-secret-{index:04d}"
                # error paths too: a tampered envelope and a truncated one
                tampered = sealed.envelope[:-2] + bytes([sealed.envelope[-2] ^ 4]) + b"\x00"
                await client.post("/v1/infer", content=tampered, headers=OCTET)
                await client.post("/v1/infer", content=sealed.envelope[:-7], headers=OCTET)
            return (await client.get("/metrics")).text

    with caplog.at_level(logging.DEBUG):
        metrics = asyncio.run(client_session())

    # control: the enclave side did decrypt exactly these JPEGs
    assert replicas[0].opened == jpegs
    seen = [*recorder.blobs, *router.seen, metrics.encode()]
    seen += [record.getMessage().encode() for record in caplog.records]
    seen += [json.dumps(record.__dict__, default=repr).encode() for record in caplog.records]
    everything = b"\n".join(seen)
    # the recorders did capture the traffic: each envelope, at both edges
    for envelope in envelopes:
        assert any(envelope in blob for blob in recorder.blobs)
        assert any(envelope in blob for blob in router.seen)
    assert b"\xff\xd8\xff\xe0" not in everything
    assert b"JFIF" not in everything
    for jpeg in jpegs:
        leaked = [w for w in windows(jpeg) if w in everything]
        assert not leaked
    for secret in (b'"cat"', b"req-secret-", b"label_name"):
        assert secret not in everything
