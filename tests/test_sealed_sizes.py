"""The ``sizes`` member of a successful answer (protocol.md 6.2 and 6.3.1): asked for in
the options, strictly parsed, present if and only if asked, and compatible both ways
with bodies and options that do not use it."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealed import (
    SUITE_X25519,
    BitstringSizes,
    EnclaveKeyPair,
    InferenceFailure,
    InferenceResult,
    MalformedError,
    RequestOptions,
    ScoredLabel,
    open_request,
    seal_request,
)
from sealed._messages import decode_response_body, encode_response_body
from sealed._protocol import seal_response_with_nonce

PAIR = EnclaveKeyPair.from_private_bytes(SUITE_X25519, b"\x33" * 32)
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(64)) + b"\xff\xd9"
BATCH = BitstringSizes(batch_images=32, batch_bitstring_bytes=261)
SINGLE = BitstringSizes(batch_images=3, batch_bitstring_bytes=27, bitstring_bytes=9)
RESULT = InferenceResult(label=3, top_k=(ScoredLabel(3, 900_000),), label_name="cat")
OK = b'"status":"ok","timings_us":{},"top_k":[{"label":1,"score_ppm":1}]}'


# ---------------------------------------------------------------------- the value
def test_fields_and_derived_sizes() -> None:
    assert (BATCH.batch_images, BATCH.batch_bitstring_bytes, BATCH.bitstring_bytes) == (
        32,
        261,
        None,
    )
    assert (
        BATCH.share_bytes == pytest.approx(8.15625) and BATCH.per_image_bytes == BATCH.share_bytes
    )
    assert SINGLE.share_bytes == 9.0 and SINGLE.per_image_bytes == 9
    alone = BitstringSizes(batch_images=1, batch_bitstring_bytes=12, bitstring_bytes=12)
    assert alone.per_image_bytes == 12


@pytest.mark.parametrize(
    "fields",
    [
        {"batch_images": 0, "batch_bitstring_bytes": 10},
        {"batch_images": 65536, "batch_bitstring_bytes": 10**6},
        {"batch_images": True, "batch_bitstring_bytes": 10},
        {"batch_images": 1, "batch_bitstring_bytes": 0},
        {"batch_images": 1, "batch_bitstring_bytes": 2**53},
        {"batch_images": 1, "batch_bitstring_bytes": 8.5},
        {"batch_images": 1, "batch_bitstring_bytes": 10, "bitstring_bytes": 0},
        {"batch_images": 1, "batch_bitstring_bytes": 10, "bitstring_bytes": 11},
        # the other two strings of the batch have a byte each: at most 8 are this one's
        {"batch_images": 3, "batch_bitstring_bytes": 10, "bitstring_bytes": 9},
        # a single-form batch of 5 images cannot hold only 4 bytes
        {"batch_images": 5, "batch_bitstring_bytes": 4, "bitstring_bytes": 1},
        {"batch_images": 1, "batch_bitstring_bytes": 10, "bitstring_bytes": False},
    ],
)
def test_invariants(fields: dict[str, object]) -> None:
    with pytest.raises(MalformedError):
        BitstringSizes(**fields)  # type: ignore[arg-type]


def test_result_field_type() -> None:
    with pytest.raises(MalformedError):
        InferenceResult(label=1, top_k=(ScoredLabel(1, 1),), sizes={"batch_images": 1})  # type: ignore[arg-type]
    assert RESULT.sizes is None  # the default: compatible with every existing caller


# ---------------------------------------------------------------------- the body
def test_body_encoding_is_canonical() -> None:
    body = encode_response_body(dataclasses.replace(RESULT, sizes=SINGLE, request_id="r"))
    assert body == (
        b'{"label":3,"label_name":"cat","request_id":"r",'
        b'"sizes":{"batch_bitstring_bytes":27,"batch_images":3,"bitstring_bytes":9},'
        b'"status":"ok","timings_us":{},"top_k":[{"label":3,"score_ppm":900000}]}'
    )
    assert decode_response_body(body) == dataclasses.replace(RESULT, sizes=SINGLE, request_id="r")
    body = encode_response_body(dataclasses.replace(RESULT, sizes=BATCH))
    assert b'"sizes":{"batch_bitstring_bytes":261,"batch_images":32},' in body
    assert decode_response_body(body).sizes == BATCH  # type: ignore[union-attr]


def test_body_without_sizes_is_unchanged() -> None:
    """Bodies of answers that do not carry the member are byte for byte as before."""
    body = encode_response_body(RESULT)
    assert b"sizes" not in body
    assert decode_response_body(body) == RESULT


@pytest.mark.parametrize(
    "sizes",
    [
        b'{"batch_bitstring_bytes":27,"batch_images":3,"bitstring_bytes":9,"extra":1}',
        b'{"batch_bitstring_bytes":27}',
        b'{"batch_images":3}',
        b"{}",
        b"[27,3]",
        b"27",
        b'"27"',
        b'{"batch_bitstring_bytes":"27","batch_images":3}',
        b'{"batch_bitstring_bytes":27,"batch_images":0}',
        b'{"batch_bitstring_bytes":0,"batch_images":1}',
        b'{"batch_bitstring_bytes":27,"batch_images":65536}',
        b'{"batch_bitstring_bytes":9007199254740992,"batch_images":3}',
        b'{"batch_bitstring_bytes":27,"batch_images":3,"bitstring_bytes":26}',
        b'{"batch_bitstring_bytes":27,"batch_images":3,"bitstring_bytes":0}',
        b'{"batch_bitstring_bytes":27,"batch_images":3,"bitstring_bytes":true}',
        b'{"batch_bitstring_bytes":27.0,"batch_images":3}',
        b'{"batch_images":3,"batch_bitstring_bytes":27}',  # not canonical (key order)
        b'{"batch_bitstring_bytes":027,"batch_images":3}',
    ],
)
def test_body_strictly_parsed(sizes: bytes) -> None:
    with pytest.raises(MalformedError):
        decode_response_body(b'{"label":1,"sizes":' + sizes + b"," + OK)


def test_other_unknown_members_still_refused() -> None:
    with pytest.raises(MalformedError):
        decode_response_body(
            b'{"label":1,"size":{"batch_bitstring_bytes":1,"batch_images":1},' + OK
        )
    with pytest.raises(MalformedError):  # a failure has no sizes
        decode_response_body(
            b'{"code":"x","message":"","sizes":{"batch_bitstring_bytes":1,"batch_images":1},'
            b'"status":"error"}'
        )


# ---------------------------------------------------------------------- the option
def test_option_encoding() -> None:
    asked = RequestOptions(top_k=2, request_id="r", sizes=True)
    assert asked.to_bytes() == b'{"request_id":"r","sizes":1,"top_k":2}'
    assert RequestOptions.from_bytes(asked.to_bytes()) == asked
    assert RequestOptions().to_bytes() == b'{"top_k":1}'  # unchanged when not asked
    assert RequestOptions.from_bytes(b'{"top_k":1}').sizes is False
    for bad in (b'{"sizes":0,"top_k":1}', b'{"sizes":2,"top_k":1}', b'{"sizes":"1","top_k":1}'):
        with pytest.raises(MalformedError):
            RequestOptions.from_bytes(bad)
    with pytest.raises(MalformedError):
        RequestOptions(sizes=1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- sealed end to end
def _exchange(options: RequestOptions, answer: InferenceResult | InferenceFailure) -> object:
    sealed = seal_request(PAIR.public_key, JPEG, options)
    opened = open_request(sealed.envelope, PAIR)
    assert opened.options == options
    return sealed.open_response(opened.seal_response(answer))


def test_asked_and_given() -> None:
    answer = _exchange(RequestOptions(sizes=True), dataclasses.replace(RESULT, sizes=BATCH))
    assert isinstance(answer, InferenceResult) and answer.sizes == BATCH


def test_not_asked_dropped_by_the_enclave() -> None:
    """An enclave that always fills ``sizes`` still answers a request that did not ask
    (an older client, which would refuse the member) exactly as before."""
    options = RequestOptions(request_id="old")
    sealed = seal_request(PAIR.public_key, JPEG, options)
    opened = open_request(sealed.envelope, PAIR)
    nonce = b"\x01" * 12
    with_sizes = seal_response_with_nonce(opened, dataclasses.replace(RESULT, sizes=SINGLE), nonce)
    without = seal_response_with_nonce(opened, RESULT, nonce)
    assert with_sizes == without
    answer = sealed.open_response(with_sizes)
    assert isinstance(answer, InferenceResult) and answer.sizes is None


def test_failures_unaffected() -> None:
    failure = InferenceFailure("invalid-image", "bad")
    assert _exchange(RequestOptions(sizes=True), failure) == failure


def _forged(options: RequestOptions, answer: InferenceResult) -> bytes:
    """Seal ``answer`` as a non-conforming enclave would (bypassing the drop)."""
    sealed = seal_request(PAIR.public_key, JPEG, options)
    opened = open_request(sealed.envelope, PAIR)
    forged = dataclasses.replace(opened, options=dataclasses.replace(options, sizes=True))
    body = seal_response_with_nonce(forged, answer, b"\x02" * 12)
    with pytest.raises(MalformedError) as info:
        sealed.open_response(body)
    return str(info.value).encode()


def test_client_refuses_unasked_sizes() -> None:
    message = _forged(RequestOptions(), dataclasses.replace(RESULT, sizes=BATCH))
    assert b"did not ask" in message


def test_client_refuses_missing_sizes_when_asked() -> None:
    sealed = seal_request(PAIR.public_key, JPEG, RequestOptions(sizes=True))
    opened = open_request(sealed.envelope, PAIR)
    body = opened.seal_response(RESULT)  # an ok answer without the asked-for sizes
    with pytest.raises(MalformedError, match="lacks the sizes"):
        sealed.open_response(body)


_SIZES = st.integers(1, 65535).flatmap(
    lambda n: st.integers(n, 2**53 - 1).flatmap(
        lambda total: st.builds(
            BitstringSizes,
            batch_images=st.just(n),
            batch_bitstring_bytes=st.just(total),
            bitstring_bytes=st.none() | st.integers(1, total - (n - 1)),
        )
    )
)


@settings(max_examples=200, deadline=None)
@given(_SIZES, st.none() | st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True))
def test_body_round_trip_property(sizes: BitstringSizes, request_id: str | None) -> None:
    result = dataclasses.replace(RESULT, sizes=sizes, request_id=request_id)
    assert decode_response_body(encode_response_body(result)) == result
