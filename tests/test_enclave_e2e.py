"""End to end in process: client SDK primitives → enclave (booted against the attestation
service with the simulated platform) → the real cloud inference app (ASGI), with a
recording tap on the enclave's only egress path. The answer equals what the cloud's
classifier gives on the decoded, perturbed image; the cloud saw only bit-strings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from torch import nn

from cloud_infer import BatchingOptions, CloudConfig, CredentialSet, create_app
from enclave_app import BatchConfig, Enclave, boot, decode_jpeg
from sealed import InferenceResult, RequestOptions, seal_request
from tests import _enclave_support as es
from vision import decode_batch, encode_batch, make_codec, write_bundle


class TinyTarget(nn.Module):
    arch = "tiny-target"

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.width = width
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.relu(self.conv(x)).mean((2, 3)))
        return out

    def config(self) -> dict[str, Any]:
        return {"width": self.width}


def _builder(role: str, arch: str, config: Mapping[str, Any]) -> nn.Module:
    if role == "codec":
        codec: nn.Module = make_codec(**config)
        return codec
    return TinyTarget(**config)


class Tap(httpx.AsyncBaseTransport):
    """Records every request on its way to the cloud app."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[es.Stack]:
    s = es.open_stack(tmp_path_factory.mktemp("enclave-e2e") / "state")
    try:
        yield s
    finally:
        es.close_stack(s)


def test_end_to_end_with_the_real_cloud(stack: es.Stack, tmp_path: Path) -> None:
    torch.manual_seed(3)
    target = TinyTarget()
    cloud_bundle = tmp_path / "cloud-bundle"
    write_bundle(cloud_bundle, {"target": target, "codec": es.codec()})
    cloud_app = create_app(
        CloudConfig(
            bundle_dir=cloud_bundle,
            credentials=CredentialSet.of([es.CREDENTIAL]),
            builder=_builder,
            label_names=tuple(f"c{i}" for i in range(10)),
            batching=BatchingOptions(max_wait_s=0),
        )
    )
    tap = Tap(httpx.ASGITransport(app=cloud_app))
    config = stack.config(cloud_transport=tap, batching=BatchConfig(max_batch=8, max_wait=0.02))
    enclave = Enclave(boot(config))
    jpegs = [es.jpeg(seed=s) for s in range(6)]

    async def run() -> list[Any]:
        async with cloud_app.router.lifespan_context(cloud_app):
            await enclave.start(refresh=False)
            try:
                key = enclave.key_pair.public_key
                sealed = [
                    seal_request(key, j, RequestOptions(top_k=3, request_id=f"q{i}"))
                    for i, j in enumerate(jpegs)
                ]
                raw = await asyncio.gather(*(enclave.handle(s.envelope) for s in sealed))
                return [s.open_response(r) for s, r in zip(sealed, raw, strict=True)]
            finally:
                await enclave.aclose()

    answers = asyncio.run(run())
    assert all(isinstance(a, InferenceResult) for a in answers)
    # what the pipeline must give: perturb, encode, decode, classify
    images = np.stack([decode_jpeg(j, 32) for j in jpegs])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        perturbed = enclave.engine.generator(x)
        decoded = decode_batch(es.codec(), encode_batch(es.codec(), perturbed))
        expected = target.eval()(decoded).argmax(1).tolist()
    got = [a.label for a in answers if isinstance(a, InferenceResult)]
    assert got == expected
    assert [a.label_name for a in answers if isinstance(a, InferenceResult)] == [
        f"c{label}" for label in expected
    ]
    # the cloud saw only conforming bit-string batches, no JPEG byte
    cloud = es.FakeCloud(requests=tap.requests)
    assert cloud.check_conforming(stack.egress) == 6
    for request in tap.requests:
        assert b"\xff\xd8\xff" not in request.content
        assert all(j[20:60] not in request.content for j in jpegs)


def test_through_the_gateway(stack: es.Stack) -> None:
    """Client → gateway (ASGI) → replica internal API (ASGI) → fake cloud: attestation,
    fresh evidence for the client's nonce, a sealed request, an unknown key."""
    import base64
    import os

    from attestation import verify_attestation_token
    from enclave_app import create_app as create_replica
    from gateway import GatewayConfig
    from gateway import create_app as create_gateway
    from sealed import EnclaveKeyPair, EnclavePublicKey

    enclave = Enclave(boot(stack.config()))
    replica = create_replica(enclave)
    gateway = create_gateway(
        GatewayConfig(
            replicas=("http://replica-1:8403",), transport=httpx.ASGITransport(app=replica)
        )
    )

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with (
            replica.router.lifespan_context(replica),
            gateway.router.lifespan_context(gateway),
        ):
            transport = httpx.ASGITransport(app=gateway)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                listing = (await http.get("/v1/attestation")).json()["attestations"]
                entry = listing[0]
                key = EnclavePublicKey.from_jwk(entry["public_key_jwk"])
                out["token"] = verify_attestation_token(
                    entry["token"],
                    stack.env.client.jwks(),
                    at=stack.env.clock(),
                    expected_key=key,
                    allow_warning=True,
                )
                nonce = os.urandom(24)
                text = base64.urlsafe_b64encode(nonce).rstrip(b"=").decode()
                ev = (await http.get("/v1/attestation", params={"nonce": text})).json()
                out["verified"] = stack.env.client.verify(nonce, key, ev["evidence"])
                sealed = seal_request(key, es.jpeg(seed=11), RequestOptions(request_id="gw"))
                r = await http.post(
                    "/v1/infer",
                    content=sealed.envelope,
                    headers={"Content-Type": "application/octet-stream"},
                )
                out["answer"] = sealed.open_response(r.content)
                stale = seal_request(EnclaveKeyPair.generate().public_key, es.jpeg())
                r = await http.post(
                    "/v1/infer",
                    content=stale.envelope,
                    headers={"Content-Type": "application/octet-stream"},
                )
                out["stale"] = (r.status_code, r.json())
        return out

    out = asyncio.run(run())
    assert out["token"].host_data == stack.launch.host_data()
    assert out["verified"].nonce_source == "client"
    assert isinstance(out["answer"], InferenceResult) and out["answer"].request_id == "gw"
    status, problem = out["stale"]
    assert status == 421 and problem["current_key_id"] == enclave.key_pair.key_id.hex
