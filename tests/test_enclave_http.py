"""The replica's internal HTTP API and the ``pmc2 enclave`` CLI."""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from attestation import verify_attestation_token
from enclave_app import BootError, Enclave, boot, create_app
from enclave_app._cli import register
from policies import LaunchConfiguration
from sealed import (
    EnclaveKeyPair,
    EnclavePublicKey,
    InferenceFailure,
    InferenceResult,
    RequestOptions,
    seal_request,
)
from tests import _enclave_support as es
from tests import _service_support as svc


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[es.Stack]:
    s = es.open_stack(tmp_path_factory.mktemp("enclave-http") / "state")
    try:
        yield s
    finally:
        es.close_stack(s)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_internal_api(stack: es.Stack) -> None:
    enclave = Enclave(boot(stack.config()))
    app = create_app(enclave)

    async def run() -> None:
        await enclave.start(refresh=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as http:
            # attestation: the token verifies and binds the served key
            doc = (await http.get("/internal/attestation")).json()
            assert set(doc) == {"key_id", "token", "public_key_jwk"}  # gateway_api.md 4.1
            key = EnclavePublicKey.from_jwk(doc["public_key_jwk"])
            assert doc["key_id"] == key.key_id.hex == enclave.key_pair.key_id.hex
            jwks = stack.env.client.jwks()
            result = verify_attestation_token(
                doc["token"], jwks, at=stack.env.clock(), expected_key=key, allow_warning=True
            )
            assert result.host_data == stack.launch.host_data()

            # fresh evidence for a client's nonce, verified by the service's /v1/verify
            nonce = os.urandom(32)
            ev = await http.get("/internal/evidence", params={"nonce": _b64(nonce)})
            assert ev.status_code == 200
            evidence = ev.json()
            assert evidence["nonce"] == _b64(nonce)
            assert evidence["key_id"] == doc["key_id"]
            assert evidence["public_key_jwk"] == doc["public_key_jwk"]
            verified = stack.env.client.verify(nonce, key, evidence["evidence"])
            assert verified.nonce == nonce and verified.nonce_source == "client"
            for bad in ("", "a" * 200, _b64(b"short"), "not base64!", _b64(nonce) + "="):
                r = await http.get("/internal/evidence", params={"nonce": bad})
                assert r.status_code == 400, bad
                assert r.headers["content-type"] == "application/problem+json"

            # a sealed request in, a sealed answer out
            sealed = seal_request(key, es.jpeg(seed=3), RequestOptions(top_k=2, request_id="h"))
            r = await http.post("/internal/infer", content=sealed.envelope)
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/octet-stream"
            answer = sealed.open_response(r.content)
            assert isinstance(answer, InferenceResult) and answer.request_id == "h"
            bad_image = seal_request(key, b"\xff\xd8\xffnot a jpeg\xff\xd9")
            r = await http.post("/internal/infer", content=bad_image.envelope)
            failure = bad_image.open_response(r.content)
            assert isinstance(failure, InferenceFailure) and failure.code == "invalid-image"

            # errors before opening: clear-text problems with the sealed codes
            other = seal_request(EnclaveKeyPair.generate().public_key, es.jpeg())
            r = await http.post("/internal/infer", content=other.envelope)
            assert r.status_code == 421
            assert r.json()["current_key_id"] == enclave.key_pair.key_id.hex
            r = await http.post("/internal/infer", content=b"garbage")
            assert r.status_code == 400 and r.json()["type"] == "urn:pmc2:sealed:malformed"
            limit = enclave.config.sealed_limits.max_envelope_bytes
            r = await http.post("/internal/infer", content=b"x" * (limit + 1))
            assert r.status_code == 413

            # health, unknown paths, methods
            health = await http.get("/healthz")
            assert health.status_code == 200 and health.json()["ready"] is True
            assert (await http.get("/nowhere")).status_code == 404
            assert (await http.get("/internal/infer")).status_code == 405

            # token expired: attestation refused, health not ready, sealed requests served
            stack.env.clock.advance(7200)
            try:
                r = await http.get("/internal/attestation")
                assert r.status_code == 503 and "Retry-After" in r.headers
                assert (await http.get("/healthz")).status_code == 503
                sealed = seal_request(key, es.jpeg(seed=4))
                r = await http.post("/internal/infer", content=sealed.envelope)
                assert isinstance(sealed.open_response(r.content), InferenceResult)
            finally:
                stack.env.clock.advance(-7200)
        await enclave.aclose()

    asyncio.run(run())
    assert stack.cloud.check_conforming(stack.egress) == 2


def test_overloaded_is_503(stack: es.Stack) -> None:
    from enclave_app import BatchConfig

    enclave = Enclave(boot(stack.config(batching=BatchConfig(max_batch=1, max_queue=1))))
    enclave.batcher._queue.append(object())  # type: ignore[arg-type]
    app = create_app(enclave)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as http:
            return await http.post("/internal/infer", content=b"x")

    r = asyncio.run(run())
    enclave.batcher._queue.clear()
    asyncio.run(enclave.aclose())
    assert r.status_code == 503 and r.headers["retry-after"] == "1"


def test_create_app_boots_in_lifespan(stack: es.Stack) -> None:
    app = create_app(stack.config())

    async def run() -> Any:
        async with app.router.lifespan_context(app):
            assert app.state.enclave is not None
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://r") as http:
                assert (await http.get("/healthz")).json()["ready"] is True
                doc = (await http.get("/internal/attestation")).json()
                sealed = seal_request(EnclavePublicKey.from_jwk(doc["public_key_jwk"]), es.jpeg())
                r = await http.post("/internal/infer", content=sealed.envelope)
                return sealed.open_response(r.content)

    assert isinstance(asyncio.run(run()), InferenceResult)


def test_boot_failure_means_no_serving(stack: es.Stack, tmp_path: Path) -> None:
    app = create_app(stack.config(encrypted_bundle=tmp_path / "absent"))

    async def run() -> None:
        async with app.router.lifespan_context(app):
            pytest.fail("served after a failed boot")

    with pytest.raises(BootError, match="boot step 1"):
        asyncio.run(run())
    assert app.state.enclave is None


# --- CLI ----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmc2")
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("bench").add_subparsers(dest="bench")
    register(sub, bench)
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    code: int = args.handler(args)
    return code


def test_cli_seal_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = tmp_path / "launch.toml"
    template.write_text(es.launch_config(model_bundle_digest=None).to_toml())
    argv = [
        "enclave", "seal-bundle", "--bundle-dir", str(es.bundle_dir()),
        "--out", str(tmp_path / "b.enc"), "--key-out", str(tmp_path / "key"),
        "--launch-template", str(template), "--launch-out", str(tmp_path / "launch-full.toml"),
    ]  # fmt: skip
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert es.bundle_digest() in out
    key = (tmp_path / "key").read_bytes()
    assert len(key) == 32 and oct((tmp_path / "key").stat().st_mode & 0o777) == "0o600"
    launch = LaunchConfiguration.from_file(tmp_path / "launch-full.toml")
    assert launch.model_bundle_digest == es.bundle_digest()
    assert launch.host_data().hex() in out
    from enclave_app import open_bundle

    opened = open_bundle((tmp_path / "b.enc").read_bytes(), key)
    assert "sha384:" + opened.digest == es.bundle_digest()
    # an existing key; refusing to overwrite a key file
    argv2 = ["enclave", "seal-bundle", "--bundle-dir", str(es.bundle_dir()),
             "--out", str(tmp_path / "c.enc"), "--key", str(tmp_path / "key")]  # fmt: skip
    assert _run(argv2) == 0
    argv3 = ["enclave", "seal-bundle", "--bundle-dir", str(es.bundle_dir()),
             "--out", str(tmp_path / "d.enc"), "--key-out", str(tmp_path / "key")]  # fmt: skip
    assert _run(argv3) == 1
    (tmp_path / "badkey").write_bytes(b"short")
    argv4 = ["enclave", "seal-bundle", "--bundle-dir", str(es.bundle_dir()),
             "--out", str(tmp_path / "e.enc"), "--key", str(tmp_path / "badkey")]  # fmt: skip
    assert _run(argv4) == 1


def test_cli_serve_boot_failure(
    stack: es.Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the attestation service of this launch configuration is unreachable (port 9 on a
    # non-routable test name): boot step 3 fails after the configured attempts
    (tmp_path / "launch.toml").write_text(stack.launch.to_toml())
    (tmp_path / "egress.toml").write_text(stack.egress.to_toml())
    argv = [
        "enclave", "serve", "--launch-config", str(tmp_path / "launch.toml"),
        "--egress-policy", str(tmp_path / "egress.toml"), "--bundle", str(es.encrypted_bundle()),
        "--provider", "simulated", "--sim-state", str(svc.platform().state_dir),
        "--sim-measurement", svc.MEASUREMENT.hex(), "--boot-attempts", "1",
    ]  # fmt: skip
    with pytest.warns(UserWarning, match="simulated"):
        code = _run(argv)
    assert code == 3
    err = capsys.readouterr().err
    assert "boot 1. check the launch configuration: ok" in err
    assert "boot step 3" in err and "not serving" in err


def test_cli_serve_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["enclave", "serve", "--launch-config", str(tmp_path / "absent.toml"),
            "--egress-policy", str(tmp_path / "absent.toml"), "--bundle", "x"]  # fmt: skip
    assert _run(argv) == 2
    assert "pmc2 enclave serve" in capsys.readouterr().err


class _BusyProvider:
    def get_report(self, report_data: bytes, vmpl: int = 0) -> Any:
        from attestation import ProviderError

        raise ProviderError("the firmware is busy")


def test_evidence_rate_limit_and_provider_failure(stack: es.Stack) -> None:
    enclave = Enclave(boot(stack.config()))
    limited = create_app(enclave, evidence_rate=0.1)  # one token, back after 10 s
    unlimited = create_app(enclave, evidence_rate=1000)
    nonce = _b64(os.urandom(16))

    async def get(app: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as http:
            return await http.get("/internal/evidence", params={"nonce": nonce})

    async def run() -> list[httpx.Response]:
        out = [await get(limited), await get(limited)]
        object.__setattr__(enclave.config, "provider", _BusyProvider())
        out.append(await get(unlimited))
        await enclave.aclose()
        return out

    first, second, failed = asyncio.run(run())
    assert first.status_code == 200
    assert second.status_code == 429 and second.headers["retry-after"] == "1"
    assert failed.status_code == 503 and "firmware is busy" in failed.json()["detail"]
    assert failed.headers["retry-after"] == "1"
