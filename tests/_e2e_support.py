"""Shared helpers for the loopback end-to-end tests: a whole stack (``pmc2._stack``) on
free loopback ports with a tiny bundle, its services served in process (real sockets),
and the client side (token verification, sealing, problem documents)."""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import io
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from attestation import verify_attestation_token
from pmc2._stack import DevStack, Ports, StackOptions, free_ports, write_tiny_bundle
from sealed import EnclavePublicKey, InferenceResponse, RequestOptions, seal_request
from tests._ovmf import require_debian_ovmf


@functools.cache
def tiny_bundle() -> Path:
    """The tiny untrained bundle, written once per session."""
    root = Path(tempfile.mkdtemp(prefix="pmc2-e2e-bundle-"))
    atexit.register(shutil.rmtree, root, True)
    return write_tiny_bundle(root / "bundle")


@functools.cache
def platform_template() -> Path:
    """A state directory holding only a simulated platform, generated once per session
    (the RSA-4096 chain takes a while) and copied into each stack's state."""
    from attestation import SimulatedPlatform

    root = Path(tempfile.mkdtemp(prefix="pmc2-e2e-platform-"))
    atexit.register(shutil.rmtree, root, True)
    SimulatedPlatform.create(root / "platform")
    return root / "platform"


class RecordingSleep:
    """The enclave's boot back-off sleeps, recorded (and slept)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(seconds)


def in_process_stack(state: Path, **overrides: Any) -> DevStack:
    """A started in-process stack on free ports with the tiny bundle (Debian's OVMF is
    measured: required under CI, skipped without it elsewhere)."""
    require_debian_ovmf()
    state.mkdir(parents=True, exist_ok=True)
    if not (state / "platform").exists():
        shutil.copytree(platform_template(), state / "platform")
    values: dict[str, Any] = {
        "state_dir": state,
        "bundle_dir": tiny_bundle(),
        "ports": Ports(*free_ports(4)),
        "in_process": True,
        "gateway_rate": 10_000.0,
        "gateway_burst": 10_000,
        "startup_timeout": 60.0,
    }
    values.update(overrides)
    stack = DevStack(StackOptions(**values))
    stack.start()
    return stack


def jpeg(seed: int = 0, size: int = 32) -> bytes:
    """A smooth random RGB JPEG (quality 90, 4:4:4)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, subsampling=0)
    return out.getvalue()


@dataclass(frozen=True)
class Offer:
    """A verified ``/v1/attestation`` entry: the key to seal to."""

    key_id: str
    key: EnclavePublicKey
    claims: dict[str, Any]


def attest(stack: DevStack, http: httpx.Client) -> Offer:
    """``GET /v1/attestation`` through the gateway; the token verified against the pinned
    JWKS and the claims against the registered measurement and launch configuration."""
    info = stack.client_info()
    response = http.get(stack.gateway_url + "/v1/attestation")
    assert response.status_code == 200, response.text
    (entry,) = response.json()["attestations"]
    key = EnclavePublicKey.from_jwk(entry["public_key_jwk"])
    result = verify_attestation_token(
        entry["token"],
        info["jwks"],
        at=dt.datetime.now(dt.UTC),
        issuer=info["issuer"],
        expected_key=key,
        allow_warning=True,
    )
    assert result.measurement.hex() == info["measurement"]
    assert result.host_data.hex() == info["launch_config_digest"]
    assert result.status == "warning"  # the simulated platform's root
    assert entry["key_id"] == result.key_id == key.key_id.hex
    return Offer(entry["key_id"], key, dict(result.claims))


def infer(
    stack: DevStack, http: httpx.Client, offer: Offer, image: bytes, top_k: int = 3
) -> tuple[httpx.Response, InferenceResponse | None]:
    """Seal ``image`` to ``offer`` and post it through the gateway; the HTTP answer and,
    for a 200, the opened sealed answer."""
    sealed = seal_request(offer.key, image, RequestOptions(top_k=top_k, request_id="e2e-1"))
    response = http.post(
        stack.gateway_url + "/v1/infer",
        content=sealed.envelope,
        headers={"Content-Type": "application/octet-stream"},
    )
    if response.status_code != 200:
        return response, None
    return response, sealed.open_response(response.content)


def problem(response: httpx.Response) -> dict[str, Any]:
    """The RFC 7807 document of a refusal."""
    assert response.headers["content-type"].startswith("application/problem+json"), (
        response.status_code,
        response.headers.get("content-type"),
        response.text[:200],
    )
    doc: dict[str, Any] = response.json()
    assert doc["status"] == response.status_code
    return doc
