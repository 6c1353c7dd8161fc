"""Shared helpers for the enclave-app tests: a tiny untrained bundle (once per session),
its encrypted form, policies naming it, the attestation service over ASGI with the
simulated platform, and a recording fake cloud."""

from __future__ import annotations

import asyncio
import atexit
import functools
import io
import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from cloud_infer import ClassifyRequest, ClassifyResponse, ImageResult, ScoredLabel
from enclave_app import EnclaveConfig, generate_bundle_key, seal_bundle
from policies import EgressPolicy, Endpoint, LaunchConfiguration, Peers
from tests import _service_support as svc
from vision import (
    UNetGenerator,
    decode_batch_latents,
    decode_single_latents,
    make_codec,
    manifest_digest,
    write_bundle,
)

CODEC_ID = "pmc2-fp-8-8/v2"
CLOUD = "http://cloud.test:8402"
ATTEST = "http://attest.test:8401"
CREDENTIAL = "enclave-credential-" + "c" * 32
MAX_BYTES = 64
RATE = 5000


def _tmpdir(prefix: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, True)
    return root


@functools.cache
def codec() -> Any:
    torch.manual_seed(0)
    c = make_codec(N=8, M=8).eval()
    c.update()
    return c


@functools.cache
def bundle_dir() -> Path:
    """A tiny bundle: an untrained U-Net (base 2) and FactorizedPrior(8, 8)."""
    torch.manual_seed(1)
    directory = _tmpdir("pmc2-enclave-bundle-") / "bundle"
    write_bundle(directory, {"generator": UNetGenerator(base=2), "codec": codec()})
    return directory


@functools.cache
def bundle_key() -> bytes:
    return generate_bundle_key()


@functools.cache
def encrypted_bundle() -> Path:
    path = bundle_dir().parent / "bundle.pmc2enc"
    path.write_bytes(seal_bundle(bundle_dir(), bundle_key()))
    return path


def bundle_digest() -> str:
    return "sha384:" + manifest_digest(bundle_dir())


def egress_policy(**overrides: Any) -> EgressPolicy:
    values: dict[str, Any] = {
        "codec": CODEC_ID,
        "max_bytes_per_image": MAX_BYTES,
        "max_images_per_second": RATE,
        "destinations": (Endpoint.parse(CLOUD),),
    }
    values.update(overrides)
    return EgressPolicy(**values)


def launch_config(egress: EgressPolicy | None = None, **overrides: Any) -> LaunchConfiguration:
    values: dict[str, Any] = {
        "egress_policy_digest": (egress or egress_policy()).digest(),
        "peers": Peers(Endpoint.parse(ATTEST), Endpoint.parse(CLOUD)),
        "model_bundle_digest": bundle_digest(),
    }
    values.update(overrides)
    return LaunchConfiguration(**values)


def jpeg(
    array: npt.NDArray[np.uint8] | None = None, *, size: int = 32, seed: int = 0, quality: int = 90
) -> bytes:
    if array is None:
        rng = np.random.default_rng(seed)
        array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(array).save(out, "JPEG", quality=quality, subsampling=0)
    return out.getvalue()


# --- fake cloud ------------------------------------------------------------------------


@dataclass
class FakeCloud:
    """A recording cloud: every request it receives is kept (method, URL, headers, body);
    it answers like cloud inference (label = image index mod 10, decreasing scores)."""

    requests: list[httpx.Request] = field(default_factory=list)
    mode: str = "ok"  # ok | down | error | garbage | slow
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_request: Callable[[httpx.Request], None] | None = None
    delay: float = 0.0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
        if self.on_request is not None:
            self.on_request(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if self.mode == "slow":
            raise httpx.ReadTimeout("timed out", request=request)
        if self.mode == "error":
            return httpx.Response(503, json={"type": "urn:pmc2:cloud:overloaded"})
        if self.mode == "garbage":
            return httpx.Response(200, content=b"not json")
        parsed = ClassifyRequest.from_bytes(request.content)
        results = []
        for index in range(parsed.count):
            label = index % 10
            others = [i for i in range(10) if i != label][: parsed.top_k - 1]
            top = [ScoredLabel(label, 600_000)] + [
                ScoredLabel(o, 40_000 - k) for k, o in enumerate(others)
            ]
            results.append(ImageResult(label, tuple(top), f"class-{label}"))
        answer = ClassifyResponse(
            codec=parsed.codec,
            results=tuple(results),
            timings_us={"decode": 10, "classify": 20},
            bundle_digest="ab" * 48,
        )
        return httpx.Response(200, content=answer.to_bytes())

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.MockTransport(self.handler)

    def check_conforming(
        self,
        policy: EgressPolicy,
        latent_side: int = 2,
        requests: list[httpx.Request] | None = None,
    ) -> int:
        """Assert every received request (or those given) is a policy-conforming
        bit-string batch and nothing else; returns the number of images received."""
        images = 0
        for request in self.requests if requests is None else requests:
            assert request.method == "POST"
            assert str(request.url) == CLOUD + "/v1/classify"
            assert policy.destination_allowed(str(request.url))
            assert request.headers["authorization"] == f"Bearer {CREDENTIAL}"
            parsed = ClassifyRequest.from_bytes(request.content)
            assert parsed.codec == policy.codec
            assert parsed.top_k == 10  # fixed by the enclave, never a client's value
            if parsed.form.value == 1:
                (stream,) = parsed.strings
                assert len(stream) <= parsed.count * policy.max_bytes_per_image
                latents = decode_batch_latents(codec(), stream)
            else:
                assert all(len(s) <= policy.max_bytes_per_image for s in parsed.strings)
                latents = decode_single_latents(codec(), list(parsed.strings))
            assert tuple(latents.shape) == (parsed.count, 8, latent_side, latent_side)
            images += parsed.count
        return images


# --- attestation service ---------------------------------------------------------------


@dataclass
class Stack:
    """The attestation service (ASGI) with the operator's registrations and resources,
    a simulated guest launched with the launch configuration's HOST_DATA, a fake cloud."""

    env: svc.Env
    launch: LaunchConfiguration
    egress: EgressPolicy
    cloud: FakeCloud
    provider: Any

    def config(self, **overrides: Any) -> EnclaveConfig:
        values: dict[str, Any] = {
            "launch_config": self.launch,
            "egress_policy": self.egress,
            "encrypted_bundle": encrypted_bundle(),
            "provider": self.provider,
            "attestation_http": self.env.http,
            "cloud_transport": self.cloud.transport(),
            "clock": self.env.clock,
            "sleep": lambda seconds: None,
        }
        values.update(overrides)
        return EnclaveConfig(**values)


def open_stack(
    state_dir: Path,
    *,
    register: bool = True,
    resources: bool = True,
    launch: LaunchConfiguration | None = None,
    egress: EgressPolicy | None = None,
) -> Stack:
    env = svc.open_env(state_dir)
    egress = egress or egress_policy()
    launch = launch or launch_config(egress)
    if register:
        env.register(svc.MEASUREMENT, launch_config=launch.to_toml())
    if resources:
        env.admin.put_resource("model-bundle-key", bundle_key())
        env.admin.put_resource("cloud-credential", CREDENTIAL.encode())
    provider = svc.guest(host=launch.host_data())
    return Stack(env=env, launch=launch, egress=egress, cloud=FakeCloud(), provider=provider)


def close_stack(stack: Stack) -> None:
    svc.close_env(stack.env)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
