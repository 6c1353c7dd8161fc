"""Enclave-app building blocks: JPEG decoding under limits, the encrypted-bundle format,
the dynamic batcher, the egress guard's checks, audit and token bucket."""

from __future__ import annotations

import asyncio
import io
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from enclave_app import (
    ENCRYPTED_BUNDLE_MAGIC,
    BatchConfig,
    Booted,
    BundleCryptError,
    DynamicBatcher,
    EgressDeniedError,
    EgressGuard,
    ImageError,
    ImageLimits,
    OverloadedError,
    RetryPolicy,
    TokenBucket,
    UpstreamError,
    codec_id_for,
    decode_jpeg,
    generate_bundle_key,
    open_bundle,
    seal_bundle,
)
from enclave_app._bundlecrypt import HEADER_SIZE, _archive
from tests import _enclave_support as es
from vision import encode_batch, encode_single, load_bundle, read_manifest

# --- JPEG decoding -----------------------------------------------------------------------


def test_decode_cifar_size_is_lossless_geometry() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = decode_jpeg(es.jpeg(pixels, quality=100), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - pixels.astype(int)).mean() < 8  # JPEG q100, no resize


def test_decode_center_crop_and_resize() -> None:
    # left third red, middle third green, right third blue: the centred square is green
    pixels = np.zeros((60, 180, 3), dtype=np.uint8)
    pixels[:, :60, 0] = 255
    pixels[:, 60:120, 1] = 255
    pixels[:, 120:, 2] = 255
    out = decode_jpeg(es.jpeg(pixels, quality=95), 16)
    assert out.shape == (16, 16, 3)
    assert out[:, :, 1].mean() > 200 and out[:, :, 0].mean() < 40 and out[:, :, 2].mean() < 40


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_decode_other_colour_modes(mode: str) -> None:
    image = Image.new(mode, (40, 40))
    out = io.BytesIO()
    image.save(out, "JPEG")
    assert decode_jpeg(out.getvalue(), 32).shape == (32, 32, 3)


def _patched(width: int, height: int) -> bytes:
    data = es.jpeg()
    pos = data.index(b"\xff\xc0")
    return data[: pos + 5] + struct.pack(">HH", height, width) + data[pos + 9 :]


@pytest.mark.parametrize(
    ("data", "limits", "match"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(40), ImageLimits(), "no SOI"),
        (b"\xff\xd8\xff", ImageLimits(), "no SOI"),
        (es.jpeg() + b"\x00", ImageLimits(), "no EOI"),
        (es.jpeg(), ImageLimits(max_bytes=100), "exceeds 100"),
        (_patched(5000, 10), ImageLimits(), "per side"),
        (_patched(4000, 4000), ImageLimits(max_pixels=10_000_000), "pixels"),
        (es.jpeg()[:200] + b"\xff\xd9", ImageLimits(), "could not be decoded"),
        (b"\xff\xd8\xff\xe0" + bytes(64) + b"\xff\xd9", ImageLimits(), "decod"),
    ],
)
def test_decode_refusals(data: bytes, limits: ImageLimits, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        decode_jpeg(data, 32, limits)


def test_pillow_bomb_guard_is_a_second_line() -> None:
    # our own limits set beyond Pillow's: its DecompressionBombError becomes an ImageError
    huge = ImageLimits(max_side=65535, max_pixels=1 << 40)
    with pytest.raises(ImageError, match="decompression-bomb"):
        decode_jpeg(_patched(60000, 60000), 32, huge)
    # and its warning zone (between MAX_IMAGE_PIXELS and twice that) too
    with pytest.raises(ImageError, match="decompression-bomb"):
        decode_jpeg(_patched(12000, 9000), 32, huge)


def test_limits_validated() -> None:
    with pytest.raises(ValueError):
        ImageLimits(max_side=0)
    with pytest.raises(ValueError):
        decode_jpeg(es.jpeg(), 0)


# --- encrypted bundle ---------------------------------------------------------------------


def test_bundle_round_trip(tmp_path: Path) -> None:
    key = generate_bundle_key()
    data = seal_bundle(es.bundle_dir(), key)
    assert data[:8] == ENCRYPTED_BUNDLE_MAGIC
    manifest = read_manifest(es.bundle_dir())
    assert data[28:76].hex() == manifest.digest()  # the manifest digest in clear
    opened = open_bundle(data, key, expected_digest=manifest.digest())
    assert opened.digest == manifest.digest()
    assert set(opened.files) == {"manifest.json", "generator.safetensors", "codec.safetensors"}
    target = opened.materialize(tmp_path / "plain")
    assert oct(target.stat().st_mode & 0o777) == "0o700"
    bundle = load_bundle(target, expected_digest=manifest.digest())
    assert codec_id_for(bundle.manifest) == es.CODEC_ID
    with pytest.raises(BundleCryptError, match="not empty"):
        opened.materialize(target)


def test_bundle_encryption_is_randomised() -> None:
    key = generate_bundle_key()
    assert seal_bundle(es.bundle_dir(), key) != seal_bundle(es.bundle_dir(), key)


def _reseal(key: bytes, plaintext: bytes, digest: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from enclave_app._bundlecrypt import _header

    nonce = bytes(12)
    header = _header(key, digest, nonce, len(plaintext) + 16)
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def test_bundle_refusals() -> None:
    key = generate_bundle_key()
    data = seal_bundle(es.bundle_dir(), key)
    digest = read_manifest(es.bundle_dir()).digest()
    cases: list[tuple[bytes, bytes, str]] = [
        (b"NOTABUND" + data[8:], key, "bad magic"),
        (data[:8] + b"\x02" + data[9:], key, "version"),
        (data[:9] + b"\x02" + data[10:], key, "algorithm"),
        (data[:50], key, "truncated"),
        (data + b"\x00", key, "length"),
        (data, bytes(32), "wrong key"),
        (
            data[:HEADER_SIZE] + bytes([data[HEADER_SIZE] ^ 1]) + data[HEADER_SIZE + 1 :],
            key,
            "damaged",
        ),
        (data[:30] + bytes([data[30] ^ 1]) + data[31:], key, "not the pinned"),
    ]
    for blob, k, match in cases:
        with pytest.raises(BundleCryptError, match=match):
            open_bundle(blob, k, expected_digest=digest)
    # a header whose digest was changed without a pin still fails authentication
    changed = data[:30] + bytes([data[30] ^ 1]) + data[31:]
    with pytest.raises(BundleCryptError, match="damaged"):
        open_bundle(changed, key)
    with pytest.raises(BundleCryptError, match="32 bytes"):
        open_bundle(data, b"short")


def test_bundle_archive_checked_after_decryption() -> None:
    key = generate_bundle_key()
    directory = es.bundle_dir()
    manifest_bytes = (directory / "manifest.json").read_bytes()
    manifest = read_manifest(directory)
    digest = bytes.fromhex(manifest.digest())
    gen = (directory / "generator.safetensors").read_bytes()
    codec = (directory / "codec.safetensors").read_bytes()
    cases = [
        (
            _archive([("manifest.json", manifest_bytes), ("generator.safetensors", gen)]),
            "not the manifest's",
        ),
        (_archive([("manifest.json", manifest_bytes), ("evil.py", b"x")]), "unexpected file"),
        (
            _archive(
                [
                    ("manifest.json", manifest_bytes),
                    ("codec.safetensors", codec),
                    ("codec.safetensors", codec),
                ]
            ),
            "duplicate",
        ),
        (
            _archive(
                [
                    ("manifest.json", manifest_bytes),
                    ("generator.safetensors", codec),
                    ("codec.safetensors", codec),
                ]
            ),
            "does not match the manifest",
        ),
        (_archive([("manifest.json", manifest_bytes)]) + b"x", "trailing"),
        (_archive([("manifest.json", b"{}")]), "bad manifest"),
    ]
    for plaintext, match in cases:
        with pytest.raises(BundleCryptError, match=match):
            open_bundle(_reseal(key, plaintext, digest), key)


def test_seal_refuses_a_tampered_bundle(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(es.bundle_dir(), copy)
    (copy / "codec.safetensors").write_bytes(b"tampered")
    with pytest.raises(BundleCryptError, match="does not match"):
        seal_bundle(copy, generate_bundle_key())
    with pytest.raises(BundleCryptError, match="not a bundle"):
        seal_bundle(tmp_path / "absent", generate_bundle_key())


# --- batcher ------------------------------------------------------------------------------


def test_batcher_collects_up_to_max_batch() -> None:
    seen: list[list[int]] = []

    async def process(items: Any) -> list[Any]:
        seen.append(list(items))
        await asyncio.sleep(0)
        return [i * 10 if i != 3 else ValueError("three") for i in items]

    async def run() -> list[Any]:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            process, BatchConfig(max_batch=4, max_wait=0.05)
        )
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(10)), return_exceptions=True
        )
        await batcher.aclose()
        return results

    results = asyncio.run(run())
    assert [len(b) for b in seen] == [4, 4, 2]
    assert results[:3] == [0, 10, 20] and isinstance(results[3], ValueError)
    assert results[9] == 90


def test_batcher_max_wait_and_failures() -> None:
    async def failing(items: Any) -> list[Any]:
        raise UpstreamError("cloud down")

    async def run() -> None:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            failing, BatchConfig(max_batch=100, max_wait=0.01)
        )
        with pytest.raises(UpstreamError):
            await asyncio.wait_for(batcher.submit(1), 2)  # a lone item leaves after max_wait
        await batcher.aclose()
        with pytest.raises(OverloadedError):
            await batcher.submit(2)

    asyncio.run(run())


def test_batcher_queue_limit() -> None:
    async def slow(items: Any) -> list[Any]:
        await asyncio.sleep(0.05)
        return list(items)

    async def run() -> list[Any]:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(
            slow, BatchConfig(max_batch=1, max_wait=0, max_queue=2, max_concurrent=1)
        )
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(6)), return_exceptions=True
        )
        await batcher.aclose()
        return results

    results = asyncio.run(run())
    assert any(isinstance(r, OverloadedError) for r in results)
    assert 0 in results


def test_batch_config_validation() -> None:
    with pytest.raises(ValueError):
        BatchConfig(max_batch=0)
    with pytest.raises(ValueError):
        BatchConfig(max_wait=-1)


def test_retry_policy() -> None:
    policy = RetryPolicy(attempts=3, initial=0.5, factor=2, max_delay=1.5, jitter=0.0)
    assert [policy.delay(i) for i in range(4)] == [0.5, 1.0, 1.5, 1.5]
    jittered = RetryPolicy(initial=1.0, jitter=0.5)
    assert jittered.delay(0, lambda: 0.0) == 0.5 and jittered.delay(0, lambda: 1.0) == 1.5
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


# --- egress guard -------------------------------------------------------------------------


def _images(n: int) -> torch.Tensor:
    torch.manual_seed(n)
    return torch.rand(n, 3, 32, 32)


def _guard(cloud: es.FakeCloud, **overrides: Any) -> EgressGuard:
    values: dict[str, Any] = {
        "policy": es.egress_policy(),
        "destination": es.CLOUD + "/v1/classify",
        "credential": es.CREDENTIAL,
        "latent_side": 2,
        "codec": es.codec(),
        "transport": cloud.transport(),
    }
    values.update(overrides)
    return EgressGuard(**values)


def _classify(guard: EgressGuard, *args: Any, **kwargs: Any) -> Any:
    async def run() -> Any:
        try:
            return await guard.classify(*args, **kwargs)
        finally:
            await guard.aclose()

    return asyncio.run(run())


def test_guard_sends_conforming_batches() -> None:
    cloud = es.FakeCloud()
    stream = encode_batch(es.codec(), _images(3))
    answer = _classify(_guard(cloud), es.CODEC_ID, [stream], 3, batch_form=True)
    assert answer.count == 3
    strings = encode_single(es.codec(), _images(2))
    guard = _guard(cloud)
    assert _classify(guard, es.CODEC_ID, strings, 2, batch_form=False).count == 2
    assert cloud.check_conforming(es.egress_policy()) == 5
    assert [r.outcome for r in guard.audit] == ["sent"]
    assert guard.stats.images_sent == 2 and guard.stats.bytes_sent == sum(map(len, strings))


def _refused(guard: EgressGuard, *args: Any, **kwargs: Any) -> tuple[str, ...]:
    with pytest.raises(EgressDeniedError) as info:
        _classify(guard, *args, **kwargs)
    assert guard.refusals[-1].reasons == info.value.reasons
    return info.value.reasons


def test_guard_refusals_are_audited_and_never_sent() -> None:
    cloud = es.FakeCloud()
    stream = encode_batch(es.codec(), _images(2))
    single = encode_single(es.codec(), _images(2))
    other_shape = encode_batch(es.codec(), torch.rand(2, 3, 64, 64))
    garbage = bytes([stream[0], stream[1], stream[2]]) + b"\x80" * 12
    cases: list[tuple[dict[str, Any], tuple[Any, ...], dict[str, Any], str]] = [
        (
            {"destination": "http://evil.test:8402/v1/classify"},
            (es.CODEC_ID, [stream], 2),
            {"batch_form": True},
            "allow-listed",
        ),
        (
            {"destination": "https://cloud.test:8402/v1/classify"},
            (es.CODEC_ID, [stream], 2),
            {"batch_form": True},
            "allow-listed",
        ),
        ({}, ("pmc2-fp-128-192/v2", [stream], 2), {"batch_form": True}, "codec"),
        (
            {"policy": es.egress_policy(max_bytes_per_image=4)},
            (es.CODEC_ID, [stream], 2),
            {"batch_form": True},
            "outside",
        ),
        (
            {"policy": es.egress_policy(max_bytes_per_image=4)},
            (es.CODEC_ID, single, 2),
            {"batch_form": False},
            "outside",
        ),
        ({}, (es.CODEC_ID, [stream], 3), {"batch_form": True}, "image count"),
        ({}, (es.CODEC_ID, [stream], 2), {"batch_form": False}, "strings for"),
        ({}, (es.CODEC_ID, single[:1], 1), {"batch_form": True}, "form"),
        (
            {"policy": es.egress_policy(max_bytes_per_image=500)},
            (es.CODEC_ID, [other_shape], 2),
            {"batch_form": True},
            "latent grid",
        ),
        ({}, (es.CODEC_ID, [b"\xff" * 10], 2), {"batch_form": True}, "not a bit-string"),
        ({}, (es.CODEC_ID, [garbage], 2), {"batch_form": True}, "codec's own output"),
        ({"max_batch": 1}, (es.CODEC_ID, [stream], 2), {"batch_form": True}, "outside 1 .. 1"),
        ({}, (es.CODEC_ID, [], 0), {"batch_form": True}, "outside"),
    ]
    for overrides, args, kwargs, match in cases:
        reasons = _refused(_guard(cloud, **overrides), *args, **kwargs)
        assert any(match in r for r in reasons), (match, reasons)
    assert not cloud.requests


def test_guard_rate_limit_token_bucket() -> None:
    cloud = es.FakeCloud()
    now = [100.0]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    guard = _guard(
        cloud,
        policy=es.egress_policy(max_images_per_second=4),
        clock=lambda: now[0],
        sleep=fake_sleep,
        rate_wait=1.0,
    )
    stream = encode_batch(es.codec(), _images(3))

    async def run() -> list[Any]:
        out: list[Any] = []
        for _ in range(3):
            try:
                out.append(await guard.classify(es.CODEC_ID, [stream], 3, batch_form=True))
            except EgressDeniedError as exc:
                out.append(exc)
        await guard.aclose()
        return out

    results = asyncio.run(run())
    # 4 tokens: the first batch of 3 leaves; the second waits 0.5 s for 2 more tokens;
    # the third would need 0.75 s more, within rate_wait, so it waits too
    assert all(not isinstance(r, Exception) for r in results)
    assert sleeps == [pytest.approx(0.5), pytest.approx(0.75)]
    # a batch larger than the bucket can never leave
    big = encode_batch(es.codec(), _images(5))
    reasons = _refused(
        _guard(cloud, policy=es.egress_policy(max_images_per_second=4)),
        es.CODEC_ID,
        [big],
        5,
        batch_form=True,
    )
    assert "rate limit" in reasons[0]


def test_guard_rate_limit_refuses_beyond_wait() -> None:
    cloud = es.FakeCloud()
    now = [0.0]
    guard = _guard(
        cloud,
        policy=es.egress_policy(max_images_per_second=2),
        clock=lambda: now[0],
        rate_wait=0.1,
    )
    stream = encode_batch(es.codec(), _images(2))

    async def run() -> Any:
        await guard.classify(es.CODEC_ID, [stream], 2, batch_form=True)
        with pytest.raises(EgressDeniedError, match="rate limit"):
            await guard.classify(es.CODEC_ID, [stream], 2, batch_form=True)
        await guard.aclose()

    asyncio.run(run())
    assert len(cloud.requests) == 1


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(10, 10, clock=lambda: now[0])
    assert bucket.try_take(10) == 0
    assert bucket.try_take(1) == pytest.approx(0.1)
    now[0] += 0.5
    assert bucket.try_take(5) == 0
    assert bucket.try_take(11) == float("inf")
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


@pytest.mark.parametrize("mode", ["down", "slow", "error", "garbage"])
def test_guard_upstream_errors(mode: str) -> None:
    cloud = es.FakeCloud(mode=mode)
    guard = _guard(cloud)
    stream = encode_batch(es.codec(), _images(1))
    with pytest.raises(UpstreamError):
        _classify(guard, es.CODEC_ID, [stream], 1, batch_form=True)
    assert guard.audit[-1].outcome == "failed" and guard.stats.upstream_failures == 1


def test_guard_validates_its_configuration() -> None:
    cloud = es.FakeCloud()
    with pytest.raises(ValueError):
        _guard(cloud, credential="two\r\nlines")
    with pytest.raises(ValueError):
        _guard(cloud, top_k=0)


def test_secrets_stay_out_of_reprs() -> None:
    # the cloud credential released to the enclave never appears in a repr (logs,
    # tracebacks), neither the guard's nor the boot result's
    secret = "released-cloud-credential-0123456789"
    guard = _guard(es.FakeCloud(), credential=secret)
    booted: Any = Booted(
        config=None,  # type: ignore[arg-type]
        key_pair=None,  # type: ignore[arg-type]
        client=None,  # type: ignore[arg-type]
        attestation=None,  # type: ignore[arg-type]
        credential=secret,
        engine=None,  # type: ignore[arg-type]
        bundle_digest="00" * 48,
    )
    assert secret not in repr(guard)
    assert secret not in repr(booted)


def test_no_warnings_from_decoding() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decode_jpeg(es.jpeg(size=64), 32)


def test_guard_size_only_refusals_are_marked() -> None:
    cloud = es.FakeCloud()
    stream = encode_batch(es.codec(), _images(2))
    small = es.egress_policy(max_bytes_per_image=4)
    with pytest.raises(EgressDeniedError) as info:
        _classify(_guard(cloud, policy=small), es.CODEC_ID, [stream], 2, batch_form=True)
    assert info.value.size_only
    with pytest.raises(EgressDeniedError) as info:
        _classify(_guard(cloud, policy=small), "pmc2-fp-1-1/v2", [stream], 2, batch_form=True)
    assert not info.value.size_only  # codec and size: splitting cannot help
    assert not cloud.requests
