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
from vision import decode_batch, encode_batch, make_codec
from vision._bundle import write_bundle


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
