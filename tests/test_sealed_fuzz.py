"""Property tests: no byte string makes the sealed package raise anything but SealedError."""

from __future__ import annotations

import contextlib
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealed import (
    SUITE_MLKEM768_X25519,
    SUITE_X25519,
    BitstringSizes,
    EnclaveKeyPair,
    EnclavePublicKey,
    InferenceResult,
    Limits,
    MalformedError,
    RequestOptions,
    ScoredLabel,
    SealedError,
    open_request,
    peek_request_header,
    seal_request,
)
from sealed._envelope import request_header_bytes
from sealed._messages import decode_response_body
from sealed._protocol import assemble_request, request_info
from sealed._vectors import reference_seal_x25519

X_PAIR = EnclaveKeyPair.from_private_bytes(SUITE_X25519, b"\x11" * 32)
PQ_PAIR = EnclaveKeyPair.from_private_bytes(SUITE_MLKEM768_X25519, b"\x22" * 32)
KEYS = [X_PAIR, PQ_PAIR]
SMALL = Limits(max_envelope_bytes=8192, max_jpeg_bytes=4096, max_response_bytes=4096)
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(200)) + b"\xff\xd9"

SEALED_X = seal_request(X_PAIR.public_key, JPEG, RequestOptions(top_k=2, request_id="f"))
SEALED_PQ = seal_request(PQ_PAIR.public_key, JPEG)
ANSWER_X = open_request(SEALED_X.envelope, KEYS).seal_response(
    InferenceResult(label=1, top_k=(ScoredLabel(1, 5),))
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _refused(call: object, *args: object, **kwargs: object) -> None:
    """Call and require either success or a SealedError (nothing else may escape)."""
    assert callable(call)
    with contextlib.suppress(SealedError):
        call(*args, **kwargs)


@FUZZ
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_request(data: bytes) -> None:
    _refused(open_request, data, KEYS, limits=SMALL)
    _refused(peek_request_header, data, SMALL)


@FUZZ
@given(
    st.sampled_from([X_PAIR, PQ_PAIR]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=2000),
)
def test_plausible_framing(pair: EnclaveKeyPair, enc_len: int, ct_len: int, tail: bytes) -> None:
    header = request_header_bytes(pair.suite, pair.key_id)
    data = header + struct.pack(">H", enc_len) + tail[: pair.suite.enc_size]
    data += struct.pack(">I", ct_len) + tail
    _refused(open_request, data, KEYS, limits=SMALL)


@FUZZ
@given(
    st.sampled_from([SEALED_X.envelope, SEALED_PQ.envelope]),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4),
    st.integers(0, 10**6),
    st.binary(max_size=8),
)
def test_mutated_envelopes(
    envelope: bytes, flips: list[tuple[int, int]], cut: int, extra: bytes
) -> None:
    data = bytearray(envelope)
    for index, mask in flips:
        data[index % len(data)] ^= mask
    _refused(open_request, bytes(data), KEYS)
    _refused(open_request, bytes(envelope[: cut % len(envelope)]) + extra, KEYS)


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_inner_plaintext(plaintext: bytes) -> None:
    """Authentic envelopes (reference sealer) around arbitrary plaintexts."""
    header = request_header_bytes(X_PAIR.suite, X_PAIR.key_id)
    enc, ct = reference_seal_x25519(
        X_PAIR.public_key.raw, b"\x05" * 32, request_info(header), b"", plaintext
    )
    _refused(open_request, assemble_request(header, enc, ct), X_PAIR)


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes_response(data: bytes) -> None:
    _refused(SEALED_X.open_response, data, limits=SMALL)
    _refused(SEALED_X.open_response, ANSWER_X[:24] + data)


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_payload_json(data: bytes) -> None:
    for parse in (RequestOptions.from_bytes, decode_response_body):
        with contextlib.suppress(MalformedError):
            parse(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["kty", "crv", "x", "alg", "pub", "kid", "d", "use"]), _json, max_size=6
    )
)
def test_arbitrary_jwk(jwk: dict[str, object]) -> None:
    with contextlib.suppress(MalformedError):
        EnclavePublicKey.from_jwk(jwk)


@FUZZ
@given(
    st.sampled_from([X_PAIR, PQ_PAIR]),
    st.binary(min_size=1, max_size=3000),
    st.integers(1, 100),
    st.none() | st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
    st.integers(1, 4096),
    st.booleans(),
)
def test_round_trip_property(
    pair: EnclaveKeyPair,
    jpeg: bytes,
    top_k: int,
    request_id: str | None,
    block: int,
    sizes: bool,
) -> None:
    options = RequestOptions(top_k=top_k, request_id=request_id, sizes=sizes)
    sealed = seal_request(pair.public_key, jpeg, options, padding_block=block)
    opened = open_request(sealed.envelope, [X_PAIR, PQ_PAIR])
    assert (opened.jpeg, opened.options, opened.response_key) == (
        jpeg,
        options,
        sealed.response_key,
    )
    given = BitstringSizes(batch_images=top_k, batch_bitstring_bytes=8 * top_k)
    result = InferenceResult(label=top_k, top_k=(ScoredLabel(top_k, 1),), sizes=given)
    answer = sealed.open_response(opened.seal_response(result))
    assert isinstance(answer, InferenceResult) and answer.label == top_k
    assert answer.sizes == (given if sizes else None)
