"""Cloud inference service: decode + classify over HTTP, refusals, batching, metrics, CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from cloud_infer import (
    MEDIA_TYPE,
    BatchingOptions,
    ClassifyRequest,
    ClassifyResponse,
    CloudConfig,
    CloudLimits,
    ConfigError,
    CredentialSet,
    InferenceEngine,
    codec_id_for,
    create_app,
    generate_credential,
)
from vision import decode_single, encode_batch, encode_single, make_codec
from vision._bundle import manifest_digest, write_bundle

T = TypeVar("T")
SECRET = generate_credential()
OTHER = generate_credential()
NAMES = tuple(f"class-{i}" for i in range(10))


class TinyNet(nn.Module):
    arch = "tiny"

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.width = width
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.relu(self.conv(x)).mean((2, 3)))
        return out

    def config(self) -> dict[str, Any]:
        return {"width": self.width}


def tiny_builder(role: str, arch: str, config: Mapping[str, Any]) -> nn.Module:
    if role == "codec":
        codec: nn.Module = make_codec(**config)
        return codec
    if arch != "tiny":
        raise ValueError(f"unknown architecture {arch!r}")
    return TinyNet(**config)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    codec = make_codec(N=8, M=8)
    codec.update()
    directory = tmp_path_factory.mktemp("bundle")
    write_bundle(directory, {"target": TinyNet(4), "codec": codec})
    return directory


def _config(bundle_dir: Path, **kw: Any) -> CloudConfig:
    base: dict[str, Any] = {
        "bundle_dir": bundle_dir,
        "credentials": CredentialSet.of([SECRET, OTHER]),
        "label_names": NAMES,
        "builder": tiny_builder,
        "batching": BatchingOptions(max_wait_s=0),
    }
    base.update(kw)
    return CloudConfig(**base)


@pytest.fixture(scope="module")
def engine(bundle_dir: Path) -> InferenceEngine:
    return InferenceEngine.load(_config(bundle_dir))


def run(app: Any, body: Callable[[httpx.AsyncClient], Awaitable[T]], *, lifespan: bool = True) -> T:
    async def main() -> T:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as client:
            if not lifespan:
                return await body(client)
            async with app.router.lifespan_context(app):
                return await body(client)

    return asyncio.run(main())


def headers(secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": MEDIA_TYPE}


def images(n: int, side: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def expected_labels(engine: InferenceEngine, x: torch.Tensor) -> list[int]:
    with torch.inference_mode():
        decoded = decode_single(engine.codec, encode_single(engine.codec, x))
        logits = engine._classifier(decoded)
    return [int(v) for v in logits.argmax(1).tolist()]


async def post(client: httpx.AsyncClient, body: bytes, **kw: Any) -> httpx.Response:
    return await client.post(
        "/v1/classify", content=body, headers=kw.pop("headers", headers()), **kw
    )


# --- happy paths ----------------------------------------------------------------------


def test_codec_id_derived(engine: InferenceEngine, bundle_dir: Path) -> None:
    assert engine.codec_id == codec_id_for(8, 8) == "pmc2-fp-8-8/v2"
    assert codec_id_for(128, 192) == "pmc2-fp-128-192/v2"
    assert engine.bundle_digest == manifest_digest(bundle_dir)
    assert engine.num_classes == 10


def test_classify_single_and_batch_forms(engine: InferenceEngine, bundle_dir: Path) -> None:
    app = create_app(_config(bundle_dir), engine=engine)
    x = images(5)
    want = expected_labels(engine, x)
    single = ClassifyRequest.single(engine.codec_id, encode_single(engine.codec, x), top_k=3)
    batch = ClassifyRequest.batch(engine.codec_id, encode_batch(engine.codec, x), 5, top_k=20)

    async def body(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await post(client, single.to_bytes()), await post(client, batch.to_bytes())]

    first, second = run(app, body)
    for response, k in ((first, 3), (second, 10)):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        answer = ClassifyResponse.from_bytes(response.content, expected_count=5)
        assert [r.label for r in answer.results] == want
        assert all(len(r.top_k) == k for r in answer.results)
        assert all(r.label_name == NAMES[r.label] for r in answer.results)
        assert answer.codec == engine.codec_id
        assert answer.bundle_digest == engine.bundle_digest
        assert set(answer.timings_us) == {"entropy_decode", "synthesis", "classify", "queue"}
        assert answer.batch_images == 5
        total = sum(e.score_ppm for e in answer.results[0].top_k)
        assert k < 10 or abs(total - 1_000_000) <= 10


def test_rotation_both_credentials(engine: InferenceEngine, bundle_dir: Path) -> None:
    app = create_app(_config(bundle_dir), engine=engine)
    body = ClassifyRequest.single(
        engine.codec_id, encode_single(engine.codec, images(1))
    ).to_bytes()

    async def go(client: httpx.AsyncClient) -> list[int]:
        return [(await post(client, body, headers=headers(s))).status_code for s in (SECRET, OTHER)]

    assert run(app, go) == [200, 200]


# --- refusals ------------------------------------------------------------------------


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = response.json()
    assert doc["type"] == f"urn:pmc2:cloud:{code}"
    assert doc["status"] == status
    assert isinstance(doc["title"], str) and isinstance(doc["detail"], str)
    return doc


def test_refusals(engine: InferenceEngine, bundle_dir: Path) -> None:
    config = _config(
        bundle_dir,
        limits=CloudLimits(max_body_bytes=4096, max_batch=8, max_string_bytes=256),
    )
    engine = InferenceEngine.load(config)  # the engine applies the configured limits
    app = create_app(config, engine=engine)
    codec = engine.codec
    cid = engine.codec_id
    good = encode_single(codec, images(3))
    corrupt = [good[0], good[1][:2] + bytes([good[1][2] ^ 0x55]) + good[1][3:], good[2]]
    big = encode_single(codec, images(1, side=48))
    stream = encode_batch(codec, images(3))

    async def go(client: httpx.AsyncClient) -> None:
        ok = ClassifyRequest.single(cid, good).to_bytes()
        r = await client.post("/v1/classify", content=ok, headers={"Content-Type": MEDIA_TYPE})
        assert _problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await post(client, ok, headers=headers(generate_credential()))
        assert "invalid_token" in r.headers["www-authenticate"]
        _problem(r, 401, "unauthorized")
        r = await post(client, ok, headers={**headers(), "Authorization": f"Basic {SECRET}"})
        _problem(r, 401, "unauthorized")
        r = await post(client, ok, headers={**headers(), "Content-Type": "application/json"})
        _problem(r, 415, "unsupported-media-type")
        r = await post(client, b"\x00" * 5000)
        _problem(r, 413, "body-too-large")
        r = await post(client, ok, headers={**headers(), "Content-Length": "12x"})
        assert r.status_code in (400, 413)

        async def chunks() -> Any:
            for _ in range(10):
                yield b"\x00" * 1000

        r = await client.post("/v1/classify", content=chunks(), headers=headers())
        _problem(r, 413, "body-too-large")
        r = await post(client, b"PMCB\x01")
        _problem(r, 400, "malformed-request")
        r = await post(client, ClassifyRequest.single("pmc2-fp-128-192/v2", good).to_bytes())
        assert "pmc2-fp-8-8/v2" in _problem(r, 422, "unsupported-codec")["detail"]
        r = await post(client, ClassifyRequest.single("pmc2-fp-8-8/v1", good).to_bytes())
        _problem(r, 422, "unsupported-codec")  # format-1 strings: not this service's codec
        r = await post(client, ClassifyRequest.single(cid, corrupt).to_bytes())
        assert _problem(r, 422, "invalid-bitstring")["index"] == 1
        r = await post(client, ClassifyRequest.single(cid, [good[0], b"\x00\x11\x80"]).to_bytes())
        assert _problem(r, 422, "invalid-bitstring")["index"] == 1
        r = await post(client, ClassifyRequest.single(cid, [stream]).to_bytes())
        _problem(r, 422, "invalid-bitstring")
        r = await post(client, ClassifyRequest.batch(cid, good[0], 1).to_bytes())
        _problem(r, 422, "invalid-bitstring")
        r = await post(client, ClassifyRequest.batch(cid, stream, 2).to_bytes())
        _problem(r, 422, "count-mismatch")
        r = await post(client, ClassifyRequest.batch(cid, stream[:-1] + b"\x01", 3).to_bytes())
        _problem(r, 422, "invalid-bitstring")
        r = await post(client, ClassifyRequest.single(cid, big).to_bytes())
        assert "48x48" in _problem(r, 422, "unexpected-image-size")["detail"]
        r = await post(client, ClassifyRequest.single(cid, good * 3).to_bytes())
        _problem(r, 413, "too-many-images")
        r = await post(client, ClassifyRequest.single(cid, [good[0] + b"\x01" * 300]).to_bytes())
        _problem(r, 413, "string-too-large")
        r = await client.get("/v1/classify")
        _problem(r, 405, "method-not-allowed")
        r = await client.get("/nope")
        _problem(r, 404, "not-found")
        # the service still answers correctly afterwards
        r = await post(client, ok)
        assert r.status_code == 200

    run(app, go)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=st.sampled_from(["/v1/classify", "/healthz", "/metrics", "/", "/v1/classify/x"]),
    body=st.binary(max_size=200),
    auth=st.sampled_from([None, "Bearer " + SECRET, "Bearer x", "garbage"]),
    ctype=st.sampled_from([None, MEDIA_TYPE, "text/plain", "application/vnd.pmc2.bitstrings; q=1"]),
)
def test_garbage_never_500(
    engine: InferenceEngine,
    bundle_dir: Path,
    method: str,
    path: str,
    body: bytes,
    auth: str | None,
    ctype: str | None,
) -> None:
    app = create_app(_config(bundle_dir), engine=engine)
    hdrs = {k: v for k, v in (("Authorization", auth), ("Content-Type", ctype)) if v is not None}

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await client.request(method, path, content=body, headers=hdrs)

    response = run(app, go, lifespan=False)
    assert response.status_code < 500


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pos=st.integers(0, 60), byte=st.integers(0, 255), batch=st.booleans())
def test_mutated_bitstrings_never_500(
    engine: InferenceEngine, bundle_dir: Path, pos: int, byte: int, batch: bool
) -> None:
    app = create_app(_config(bundle_dir), engine=engine)
    x = images(2)
    if batch:
        data = bytearray(encode_batch(engine.codec, x))
    else:
        data = bytearray(encode_single(engine.codec, x)[1])
    if pos < len(data):
        data[pos] = byte
    else:
        data.append(byte)
    if batch:
        request = ClassifyRequest.batch(engine.codec_id, bytes(data), 2)
    else:
        first = encode_single(engine.codec, x)[0]
        request = ClassifyRequest.single(engine.codec_id, [first, bytes(data)])

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await post(client, request.to_bytes())

    response = run(app, go)
    assert response.status_code in (200, 413, 422), response.text


# --- configuration -------------------------------------------------------------------


def test_configuration_errors(bundle_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not name"):
        InferenceEngine.load(_config(bundle_dir, codec_id="pmc2-fp-128-192/v2"))
    with pytest.raises(ConfigError, match="label names"):
        InferenceEngine.load(_config(bundle_dir, label_names=("a", "b")))
    with pytest.raises(ConfigError, match="digest"):
        InferenceEngine.load(_config(bundle_dir, expected_bundle_digest="00" * 48))
    with pytest.raises(ConfigError, match="bundle"):
        InferenceEngine.load(_config(bundle_dir / "missing"))
    pinned = manifest_digest(bundle_dir)
    engine = InferenceEngine.load(
        _config(bundle_dir, expected_bundle_digest=pinned, codec_id="pmc2-fp-8-8/v2")
    )
    assert engine.label_names == NAMES


# --- batching, back-pressure, timeouts -----------------------------------------------


def _slow(engine: InferenceEngine, delay: float, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    original = engine.run_batch

    def slow(requests: Sequence[ClassifyRequest]) -> Any:
        sizes.append(sum(r.count for r in requests))
        time.sleep(delay)
        return original(requests)

    monkeypatch.setattr(engine, "run_batch", slow)
    return sizes


def test_micro_batching_merges_concurrent_requests(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = InferenceEngine.load(_config(bundle_dir))
    sizes = _slow(engine, 0.4, monkeypatch)
    config = _config(bundle_dir, batching=BatchingOptions(max_batch_images=64, max_wait_s=0.1))
    app = create_app(config, engine=engine)
    x = images(8)
    strings = encode_single(engine.codec, x)
    want = expected_labels(engine, x)
    bodies = [ClassifyRequest.single(engine.codec_id, [s]).to_bytes() for s in strings]

    async def go(client: httpx.AsyncClient) -> tuple[list[httpx.Response], float]:
        responses = await asyncio.gather(*(post(client, b) for b in bodies))
        # the event loop stays responsive while a batch runs in the worker thread
        task = asyncio.gather(*(post(client, b) for b in bodies[:2]))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        health = await client.get("/healthz")
        elapsed = time.perf_counter() - started
        assert health.status_code == 200
        await task
        return list(responses), elapsed

    responses, health_elapsed = run(app, go)
    answers = [ClassifyResponse.from_bytes(r.content, expected_count=1) for r in responses]
    assert [a.results[0].label for a in answers] == want
    assert sizes[0] == 8  # all eight requests in one forward pass
    assert answers[0].batch_images == 8
    assert health_elapsed < 0.2  # the batch in the worker thread takes 0.4 s


def test_overload_and_timeout(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = InferenceEngine.load(_config(bundle_dir))
    _slow(engine, 0.3, monkeypatch)
    limits = CloudLimits(max_pending_images=2, request_timeout_s=0.1, retry_after_s=7)
    app = create_app(_config(bundle_dir, limits=limits), engine=engine)
    body = ClassifyRequest.single(
        engine.codec_id, encode_single(engine.codec, images(2))
    ).to_bytes()

    async def go(client: httpx.AsyncClient) -> list[httpx.Response]:
        first = asyncio.create_task(post(client, body))
        await asyncio.sleep(0.02)
        second = await post(client, body)
        return [await first, second]

    timed_out, overloaded = run(app, go)
    _problem(overloaded, 503, "overloaded")
    assert overloaded.headers["retry-after"] == "7"
    _problem(timed_out, 503, "timeout")
    assert timed_out.headers["retry-after"] == "7"


def test_healthz_and_metrics(engine: InferenceEngine, bundle_dir: Path) -> None:
    app = create_app(_config(bundle_dir), engine=engine)
    x = images(4)
    body = ClassifyRequest.batch(engine.codec_id, encode_batch(engine.codec, x), 4).to_bytes()

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        assert (await post(client, body)).status_code == 200
        assert (await post(client, b"junk")).status_code == 400
        return await client.get("/healthz"), await client.get("/metrics")

    health, metrics = run(app, go)
    assert health.json()["status"] == "ok"
    assert health.json()["codec"] == engine.codec_id
    assert health.json()["image_size"] == [32, 32]
    text = metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "pmc2_cloud_images_total 4.0" in text
    assert 'pmc2_cloud_requests_total{route="/v1/classify",status="200"} 1.0' in text
    assert 'pmc2_cloud_requests_total{route="/v1/classify",status="400"} 1.0' in text
    assert 'pmc2_cloud_errors_total{code="malformed-request"} 1.0' in text
    assert "pmc2_cloud_request_duration_seconds_bucket" in text
    assert "pmc2_cloud_batch_images_count 1.0" in text
    assert "pmc2_cloud_pending_images 0.0" in text


# --- CLI -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from cloud_infer._cli import register

    parser = argparse.ArgumentParser(prog="pmc2")
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("bench").add_subparsers(dest="bench")
    register(sub, bench)
    return parser


def test_cli_credential_and_parsing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    out = tmp_path / "cred"
    args = parser.parse_args(["cloud", "credential", "--out", str(out)])
    assert args.handler(args) == 0
    secret = out.read_text().strip()
    assert (out.stat().st_mode & 0o777) == 0o600
    digest_line = capsys.readouterr().out.strip()
    assert CredentialSet.from_text(digest_line).matches(secret)
    assert args.handler(args) == 1  # never overwrites
    args = parser.parse_args(
        ["cloud", "serve", "--bundle", "b", "--credential-file", "f", "--port", "9000"]
    )
    assert args.port == 9000 and args.image_size == 32 and args.labels == "cifar10"
    args = parser.parse_args(["bench", "cloud", "--batch-sizes", "1", "4"])
    assert args.batch_sizes == [1, 4]


def test_cli_serve_refuses_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    (tmp_path / "creds").write_text("not-a-credential\n")
    args = parser.parse_args(
        ["cloud", "serve", "--bundle", str(tmp_path), "--credential-file", str(tmp_path / "creds")]
    )
    assert args.handler(args) == 1
    assert "credential file line 1" in capsys.readouterr().err


def test_worker_thread_is_not_the_event_loop(engine: InferenceEngine, bundle_dir: Path) -> None:
    threads: list[str] = []
    original = engine.run_batch

    def record(requests: Sequence[ClassifyRequest]) -> Any:
        threads.append(threading.current_thread().name)
        return original(requests)

    app = create_app(_config(bundle_dir), engine=engine)
    app.state.batcher._run_batch = record
    body = ClassifyRequest.single(
        engine.codec_id, encode_single(engine.codec, images(1))
    ).to_bytes()

    async def go(client: httpx.AsyncClient) -> int:
        return (await post(client, body)).status_code

    assert run(app, go) == 200
    assert threads and threads[0].startswith("pmc2-cloud-infer")
    assert json.loads(json.dumps(threads))
