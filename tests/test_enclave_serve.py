"""Serving sealed requests end to end (booted enclave, fake recording cloud): answers,
dynamic batching, bad images, egress violations, cloud failures, and the property that
the cloud only ever receives policy-conforming bit-strings."""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from enclave_app import BatchConfig, Booted, Enclave, OverloadedError, boot
from sealed import (
    EnclaveKeyPair,
    InferenceFailure,
    InferenceResult,
    MalformedError,
    RequestOptions,
    SealedError,
    UnknownKeyError,
    seal_request,
)
from tests import _enclave_support as es

_T = TypeVar("_T")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[es.Stack]:
    s = es.open_stack(tmp_path_factory.mktemp("enclave-serve") / "state")
    try:
        yield s
    finally:
        es.close_stack(s)


@pytest.fixture(scope="module")
def booted(stack: es.Stack) -> Booted:
    return boot(stack.config(batching=BatchConfig(max_batch=8, max_wait=0.02)))


class Harness:
    """A started enclave on its own event loop (one per module: hypothesis reuses it)."""

    def __init__(self, booted: Booted, cloud: es.FakeCloud) -> None:
        self.runner = asyncio.Runner()
        self.cloud = cloud
        self.enclave = Enclave(booted)
        self.run(self.enclave.start(refresh=False))

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.runner.run(coro)

    def infer(self, jpeg: bytes, options: RequestOptions | None = None) -> Any:
        sealed = seal_request(self.enclave.key_pair.public_key, jpeg, options)
        return sealed.open_response(self.run(self.enclave.handle(sealed.envelope)))

    def close(self) -> None:
        self.run(self.enclave.aclose())
        self.runner.close()


@pytest.fixture(scope="module")
def harness(booted: Booted, stack: es.Stack) -> Iterator[Harness]:
    h = Harness(booted, stack.cloud)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def cloud(harness: Harness) -> Iterator[es.FakeCloud]:
    harness.cloud.mode = "ok"
    harness.cloud.requests.clear()
    yield harness.cloud
    harness.cloud.mode = "ok"


def test_one_request(harness: Harness, cloud: es.FakeCloud) -> None:
    answer = harness.infer(es.jpeg(seed=1), RequestOptions(top_k=3, request_id="req-1"))
    assert isinstance(answer, InferenceResult)
    assert answer.request_id == "req-1"
    assert answer.label == 0 and answer.label_name == "class-0"
    assert [e.label for e in answer.top_k] == [0, 1, 2]
    assert answer.top_k[0].score_ppm == 600_000
    timings = answer.timings
    for name in ("open", "decode", "queue", "perturb", "encode", "cloud", "total"):
        assert name in timings
    assert timings["cloud_classify"] == 20
    assert timings["total"] >= timings["perturb"]
    assert cloud.check_conforming(harness.enclave.guard.policy) == 1


def test_top_k_beyond_the_cloud(harness: Harness, cloud: es.FakeCloud) -> None:
    answer = harness.infer(es.jpeg(seed=2), RequestOptions(top_k=50))
    assert isinstance(answer, InferenceResult)
    assert len(answer.top_k) == 10  # what the cloud returned (fixed top_k of the enclave)


def test_concurrent_requests_are_batched(harness: Harness, cloud: es.FakeCloud) -> None:
    enclave = harness.enclave
    sealed = [
        seal_request(
            enclave.key_pair.public_key, es.jpeg(seed=i), RequestOptions(request_id=f"r{i}")
        )
        for i in range(20)
    ]

    async def all_at_once() -> list[bytes]:
        return await asyncio.gather(*(enclave.handle(s.envelope) for s in sealed))

    batches_before = enclave.batcher.stats.batches
    answers = [s.open_response(b) for s, b in zip(sealed, harness.run(all_at_once()), strict=True)]
    assert all(isinstance(a, InferenceResult) for a in answers)
    assert [a.request_id for a in answers] == [f"r{i}" for i in range(20)]
    batches = enclave.batcher.stats.batches - batches_before
    assert batches < 20 and len(cloud.requests) == batches
    assert enclave.batcher.stats.largest > 1
    assert cloud.check_conforming(enclave.guard.policy) == 20


def test_large_photo_is_brought_to_input_size(harness: Harness, cloud: es.FakeCloud) -> None:
    rng = np.random.default_rng(5)
    photo = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    answer = harness.infer(es.jpeg(photo))
    assert isinstance(answer, InferenceResult)
    assert cloud.check_conforming(harness.enclave.guard.policy) == 1


def _with_dimensions(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF0 frame header patched to claim ``width x height``."""
    pos = data.index(b"\xff\xc0")
    return data[: pos + 5] + struct.pack(">HH", height, width) + data[pos + 9 :]


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32)).save(out, "PNG")
    return out.getvalue()


BAD_IMAGES = {
    "png": _png(),
    "garbage": b"\x00\x01garbage" * 10,
    "soi-only": b"\xff\xd8\xff\xd9",
    "truncated": es.jpeg(seed=3)[:300] + b"\xff\xd9",
    "trailing-bytes": es.jpeg(seed=3) + b"extra",
    "bomb": _with_dimensions(es.jpeg(seed=3), 60000, 60000),
    "wide": _with_dimensions(es.jpeg(seed=3), 5000, 8),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_images_refused_cleanly(harness: Harness, cloud: es.FakeCloud, name: str) -> None:
    answer = harness.infer(BAD_IMAGES[name], RequestOptions(request_id="bad"))
    assert isinstance(answer, InferenceFailure)
    assert answer.code == "invalid-image" and answer.request_id == "bad"
    assert not cloud.requests


def test_unknown_key_before_open(harness: Harness, cloud: es.FakeCloud) -> None:
    other = EnclaveKeyPair.generate()
    sealed = seal_request(other.public_key, es.jpeg())
    with pytest.raises(UnknownKeyError) as info:
        harness.run(harness.enclave.handle(sealed.envelope))
    assert info.value.current_key_id == harness.enclave.key_pair.key_id.hex
    with pytest.raises(MalformedError):
        harness.run(harness.enclave.handle(b"XXXX garbage"))
    assert not cloud.requests


@pytest.mark.parametrize("mode", ["down", "slow", "error", "garbage"])
def test_cloud_failure_then_recovery(harness: Harness, cloud: es.FakeCloud, mode: str) -> None:
    cloud.mode = mode
    answer = harness.infer(es.jpeg(seed=4), RequestOptions(request_id="c"))
    assert isinstance(answer, InferenceFailure)
    assert answer.code == "upstream-unavailable" and answer.request_id == "c"
    failed = [r for r in harness.enclave.guard.audit if r.outcome == "failed"]
    assert failed and failed[-1].count == 1
    cloud.mode = "ok"
    assert isinstance(harness.infer(es.jpeg(seed=4)), InferenceResult)
    # what was sent while the cloud failed was conforming too
    assert cloud.check_conforming(harness.enclave.guard.policy) == 2


def test_egress_violation_blocked_and_audited(harness: Harness, cloud: es.FakeCloud) -> None:
    guard = harness.enclave.guard
    policy = guard.policy
    try:
        guard.destination = "http://elsewhere.test/v1/classify"
        answer = harness.infer(es.jpeg(seed=6), RequestOptions(request_id="e"))
        assert isinstance(answer, InferenceFailure) and answer.code == "egress-denied"
        assert "allow-listed" in answer.message
        refusal = guard.refusals[-1]
        assert refusal.destination == "http://elsewhere.test/v1/classify"
        assert any("allow-listed" in r for r in refusal.reasons)
    finally:
        guard.destination = es.CLOUD + "/v1/classify"
    try:
        guard.policy = es.egress_policy(max_bytes_per_image=2)
        answer = harness.infer(es.jpeg(seed=6))
        assert isinstance(answer, InferenceFailure) and answer.code == "egress-denied"
        assert any("outside" in r for r in guard.refusals[-1].reasons)
    finally:
        guard.policy = policy
    assert not cloud.requests  # refused means never sent
    assert isinstance(harness.infer(es.jpeg(seed=6)), InferenceResult)


def test_overloaded_before_opening(booted: Booted, stack: es.Stack) -> None:
    enclave = Enclave(booted)
    enclave.batcher.config = BatchConfig(max_batch=1, max_queue=1)
    enclave.batcher._queue.append(object())  # type: ignore[arg-type]
    with pytest.raises(OverloadedError):
        asyncio.run(enclave.handle(b"anything"))
    enclave.batcher._queue.clear()


def test_timeout_is_a_sealed_failure(harness: Harness, cloud: es.FakeCloud) -> None:
    config = harness.enclave.config
    original = config.request_timeout
    object.__setattr__(config, "request_timeout", 0.05)
    cloud.delay = 0.3
    try:
        answer = harness.infer(es.jpeg(seed=7))
    finally:
        object.__setattr__(config, "request_timeout", original)
        cloud.delay = 0.0
    assert isinstance(answer, InferenceFailure) and answer.code == "timeout"
    assert isinstance(harness.infer(es.jpeg(seed=7)), InferenceResult)


def test_health(harness: Harness, cloud: es.FakeCloud) -> None:
    health = harness.enclave.health()
    assert health["ready"] is True and health["codec"] == es.CODEC_ID
    assert health["egress"]["images_sent"] >= 1


# --- the property: only conforming bit-strings leave -----------------------------------


def _jpeg_strategy() -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        width = draw(st.integers(1, 80))
        height = draw(st.integers(1, 80))
        mode = draw(st.sampled_from(["RGB", "L", "CMYK"]))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        channels = {"RGB": 3, "L": 1, "CMYK": 4}[mode]
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=draw(st.integers(1, 100)))
        data = out.getvalue()
        cut = draw(st.sampled_from(["none", "truncate", "flip", "append"]))
        if cut == "truncate":
            data = data[: draw(st.integers(1, len(data)))]
        elif cut == "flip":
            index = draw(st.integers(0, len(data) - 1))
            data = data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]
        elif cut == "append":
            data += draw(st.binary(min_size=1, max_size=16))
        return data

    return build()


_INPUTS = st.one_of(
    _jpeg_strategy(),
    st.binary(min_size=1, max_size=512),
    st.binary(min_size=1, max_size=64).map(lambda b: b"\xff\xd8\xff" + b + b"\xff\xd9"),
)
_OPTIONS = st.builds(
    RequestOptions,
    top_k=st.integers(1, 100),
    request_id=st.none() | st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(st.tuples(_INPUTS, _OPTIONS), min_size=1, max_size=4))
def test_property_cloud_only_receives_conforming_bitstrings(
    harness: Harness, cloud: es.FakeCloud, batch: list[tuple[bytes, RequestOptions]]
) -> None:
    enclave = harness.enclave
    sealed = [seal_request(enclave.key_pair.public_key, data, opts) for data, opts in batch]
    before = len(cloud.requests)

    async def concurrently() -> list[bytes | BaseException]:
        return await asyncio.gather(
            *(enclave.handle(s.envelope) for s in sealed), return_exceptions=True
        )

    answered = 0
    for s, raw, (_data, opts) in zip(sealed, harness.run(concurrently()), batch, strict=True):
        assert isinstance(raw, bytes), raw  # opened requests always get a sealed answer
        answer = s.open_response(raw)
        assert answer.request_id == opts.request_id
        if isinstance(answer, InferenceResult):
            assert 1 <= len(answer.top_k) <= min(opts.top_k, 10)
            answered += 1
        else:
            assert answer.code == "invalid-image", answer
    new = cloud.requests[before:]
    assert len(new) <= len(batch)
    assert cloud.check_conforming(enclave.guard.policy, requests=new) == answered


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(envelope=st.binary(min_size=0, max_size=300))
def test_property_garbage_envelopes_never_reach_the_cloud(
    harness: Harness, cloud: es.FakeCloud, envelope: bytes
) -> None:
    before = len(cloud.requests)
    with pytest.raises(SealedError):
        harness.run(harness.enclave.handle(envelope))
    assert len(cloud.requests) == before


def test_audit_sink_receives_records(booted: Booted, stack: es.Stack, tmp_path: Path) -> None:
    records: list[Any] = []
    enclave = Enclave(booted, egress_sink=records.append)

    async def run() -> Any:
        await enclave.start(refresh=False)
        try:
            sealed = seal_request(enclave.key_pair.public_key, es.jpeg(seed=9))
            return sealed.open_response(await enclave.handle(sealed.envelope))
        finally:
            await enclave.aclose()

    assert isinstance(asyncio.run(run()), InferenceResult)
    assert [r.outcome for r in records] == ["sent"]
    assert records[0].to_json()["event"] == "egress"


def test_oversized_image_fails_alone(booted: Booted, stack: es.Stack) -> None:
    """A batch refused only for its size is split until the offending image is alone."""
    from cloud_infer import ClassifyResponse
    from cloud_infer import ImageResult as CloudResult
    from cloud_infer import ScoredLabel as CloudScore
    from enclave_app import EgressDeniedError, EncodedBatch

    enclave = Enclave(booted, egress_sink=None)
    marker = 255  # an all-white image stands for one whose bit-string is too large
    calls: list[int] = []

    def run(images: Any) -> EncodedBatch:
        flags = bytes(int(img.min() == marker) for img in images)
        return EncodedBatch((flags,), len(images), True, 1, 1)

    async def classify(codec: str, strings: Any, count: int, *, batch_form: bool) -> Any:
        calls.append(count)
        if 1 in strings[0]:
            raise EgressDeniedError(["stream too large"], size_only=True)
        results = tuple(CloudResult(i, (CloudScore(i, 900_000),)) for i in range(count))
        return ClassifyResponse(es.CODEC_ID, results, {}, "ab" * 48)

    stub = type("StubEngine", (), {"run": staticmethod(run), "codec_id": es.CODEC_ID})
    enclave.engine = stub()
    enclave.guard.classify = classify  # type: ignore[method-assign]
    white = np.full((32, 32, 3), marker, dtype=np.uint8)
    jpegs = [es.jpeg(seed=1), es.jpeg(seed=2), es.jpeg(white, quality=100), es.jpeg(seed=3)]

    async def go() -> list[Any]:
        await enclave.start(refresh=False)
        try:
            key = enclave.key_pair.public_key
            sealed = [seal_request(key, j) for j in jpegs]
            raw = await asyncio.gather(*(enclave.handle(s.envelope) for s in sealed))
            return [s.open_response(r) for s, r in zip(sealed, raw, strict=True)]
        finally:
            await enclave.aclose()

    answers = asyncio.run(go())
    codes = [a.code if isinstance(a, InferenceFailure) else "ok" for a in answers]
    assert codes == ["ok", "ok", "egress-denied", "ok"]
    assert sorted(calls) == [1, 1, 2, 2, 4]  # 4 refused; halves: 2 sent, 2 refused; 1 + 1


# --- the bit-string sizes of the sealed answer (protocol.md 6.3.1) ---------------------


def _sent(request: Any) -> tuple[int, int, tuple[int, ...]]:
    """(images, bit-string bytes, per-string lengths) of one request the cloud received."""
    from cloud_infer import ClassifyRequest

    parsed = ClassifyRequest.from_bytes(request.content)
    lengths = tuple(len(s) for s in parsed.strings)
    return parsed.count, sum(lengths), lengths


def test_sizes_are_what_the_guard_sent(harness: Harness, cloud: es.FakeCloud) -> None:
    guard = harness.enclave.guard
    answer = harness.infer(es.jpeg(seed=11), RequestOptions(request_id="s", sizes=True))
    assert isinstance(answer, InferenceResult) and answer.sizes is not None
    count, total, lengths = _sent(cloud.requests[-1])
    assert (answer.sizes.batch_images, answer.sizes.batch_bitstring_bytes) == (count, total)
    assert len(lengths) == 1 and answer.sizes.bitstring_bytes is None  # batch form: one stream
    record = guard.audit[-1]
    assert (record.outcome, record.count, record.payload_bytes) == ("sent", count, total)
    assert answer.sizes.per_image_bytes == total / count


def test_sizes_only_when_asked(harness: Harness, cloud: es.FakeCloud) -> None:
    answer = harness.infer(es.jpeg(seed=11), RequestOptions(request_id="n"))
    assert isinstance(answer, InferenceResult) and answer.sizes is None
    assert cloud.requests  # it was sent all the same


def test_sizes_of_concurrent_requests_are_their_batches(
    harness: Harness, cloud: es.FakeCloud
) -> None:
    enclave = harness.enclave
    key = enclave.key_pair.public_key
    sealed = [
        seal_request(key, es.jpeg(seed=100 + i), RequestOptions(request_id=f"b{i}", sizes=True))
        for i in range(12)
    ]

    async def all_at_once() -> list[bytes]:
        return await asyncio.gather(*(enclave.handle(s.envelope) for s in sealed))

    answers = [s.open_response(b) for s, b in zip(sealed, harness.run(all_at_once()), strict=True)]
    got: list[tuple[int, int]] = []
    for answer in answers:
        assert isinstance(answer, InferenceResult) and answer.sizes is not None
        got.append((answer.sizes.batch_images, answer.sizes.batch_bitstring_bytes))
    # each batch the cloud received, once per image it carried
    expected = [(count, total) for count, total, _ in map(_sent, cloud.requests)]
    assert sorted(got) == sorted(pair for pair in expected for _ in range(pair[0]))
    assert sum(count for count, _ in expected) == 12


def test_sizes_in_the_single_form(booted: Booted, stack: es.Stack) -> None:
    """One string per image: each answer names its own string, which is the one the
    cloud received at its position in the batch."""
    stack.cloud.requests.clear()
    enclave = Enclave(booted)
    engine = enclave.engine
    key = enclave.key_pair.public_key
    sealed = [
        seal_request(key, es.jpeg(seed=200 + i), RequestOptions(request_id=f"s{i}", sizes=True))
        for i in range(5)
    ]

    async def go() -> list[bytes]:
        await enclave.start(refresh=False)
        try:
            return await asyncio.gather(*(enclave.handle(s.envelope) for s in sealed))
        finally:
            await enclave.aclose()

    engine.batch_form = False
    try:
        raw = asyncio.run(go())
    finally:
        engine.batch_form = True
    answers = [s.open_response(r) for s, r in zip(sealed, raw, strict=True)]
    sent = [_sent(r) for r in stack.cloud.requests]
    assert sum(count for count, _, _ in sent) == 5
    strings = sorted(length for _, _, lengths in sent for length in lengths)
    own = []
    for answer in answers:
        assert isinstance(answer, InferenceResult) and answer.sizes is not None
        sizes = answer.sizes
        assert sizes.bitstring_bytes is not None
        assert (sizes.batch_images, sizes.batch_bitstring_bytes) in {(c, t) for c, t, _ in sent}
        assert sizes.per_image_bytes == sizes.bitstring_bytes
        own.append(sizes.bitstring_bytes)
    assert sorted(own) == strings
    assert stack.cloud.check_conforming(enclave.guard.policy) == 5
    stack.cloud.requests.clear()


def test_sizes_after_a_split_are_the_sent_part(booted: Booted, stack: es.Stack) -> None:
    """A batch refused for its size and split: each answer reports the part that left."""
    from cloud_infer import ClassifyResponse
    from cloud_infer import ImageResult as CloudResult
    from cloud_infer import ScoredLabel as CloudScore
    from enclave_app import EgressDeniedError, EncodedBatch

    enclave = Enclave(booted)
    marker = 255
    sent: list[tuple[int, int]] = []

    def run(images: Any) -> EncodedBatch:
        # a stream of 3 bytes per image; a white image marks one that is too large
        flags = b"".join(bytes([int(img.min() == marker)]) * 3 for img in images)
        return EncodedBatch((flags,), len(images), True, 1, 1)

    async def classify(codec: str, strings: Any, count: int, *, batch_form: bool) -> Any:
        if 1 in strings[0]:
            raise EgressDeniedError(["stream too large"], size_only=True)
        sent.append((count, len(strings[0])))
        results = tuple(CloudResult(i, (CloudScore(i, 900_000),)) for i in range(count))
        return ClassifyResponse(es.CODEC_ID, results, {}, "ab" * 48)

    stub = type("StubEngine", (), {"run": staticmethod(run), "codec_id": es.CODEC_ID})
    enclave.engine = stub()
    enclave.guard.classify = classify  # type: ignore[method-assign]
    # the four requests form one batch whatever the load: it closes only when full
    enclave.batcher.config = BatchConfig(max_batch=4, max_wait=5.0)
    white = np.full((32, 32, 3), marker, dtype=np.uint8)
    jpegs = [es.jpeg(seed=1), es.jpeg(seed=2), es.jpeg(white, quality=100), es.jpeg(seed=3)]

    async def go() -> list[Any]:
        await enclave.start(refresh=False)
        try:
            key = enclave.key_pair.public_key
            sealed = [seal_request(key, j, RequestOptions(sizes=True)) for j in jpegs]
            raw = await asyncio.gather(*(enclave.handle(s.envelope) for s in sealed))
            return [s.open_response(r) for s, r in zip(sealed, raw, strict=True)]
        finally:
            await enclave.aclose()

    answers = asyncio.run(go())
    sizes = [
        (a.sizes.batch_images, a.sizes.batch_bitstring_bytes, a.sizes.bitstring_bytes)
        if isinstance(a, InferenceResult) and a.sizes is not None
        else a.code
        for a in answers
    ]
    # The batch holds the requests in the order they were opened (concurrently), so which
    # neighbour shares the refused image's half varies: one half of two images left, the
    # refused image's half was split again and its neighbour left alone.
    assert sizes[2] == "egress-denied"
    assert sorted(sizes[:2] + sizes[3:]) == [(1, 3, None), (2, 6, None), (2, 6, None)]
    assert sorted(sent) == [(1, 3), (2, 6)]
