"""The sealed-request protocol: round trips, keys, every error class, tampering, limits."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from sealed import (
    DEFAULT_LIMITS,
    DEFAULT_SUITE,
    SUITE_MLKEM768_X25519,
    SUITE_X25519,
    SUPPORTED_SUITES,
    DecryptionError,
    EnclaveKeyPair,
    EnclavePublicKey,
    HpkeSuite,
    InferenceFailure,
    InferenceResult,
    InsecureKeyExportWarning,
    KeyId,
    Limits,
    MalformedError,
    OpenedRequest,
    OversizedError,
    RequestOptions,
    ScoredLabel,
    SealedError,
    SealedRequest,
    UnknownKeyError,
    UnsupportedSuiteError,
    UnsupportedVersionError,
    WrongSuiteError,
    open_request,
    open_response,
    peek_request_header,
    seal_request,
    seal_response,
)
from sealed._keys import _xwing_expand
from sealed._protocol import assemble_request, request_info, request_plaintext
from sealed._vectors import reference_seal_x25519

JPEG = bytes.fromhex("ffd8ffe000104a464946000101") + bytes(range(256)) * 4 + b"\xff\xd9"
RESULT = InferenceResult(
    label=7,
    top_k=(ScoredLabel(7, 800000), ScoredLabel(2, 150000), ScoredLabel(9, 150000)),
    label_name="horse",
    timings_us=(("perturb", 2616), ("encode", 550)),
)

SUITE_IDS = [s.name for s in SUPPORTED_SUITES]


@pytest.fixture(scope="module", params=SUPPORTED_SUITES, ids=SUITE_IDS)
def pair(request: pytest.FixtureRequest) -> EnclaveKeyPair:
    suite: HpkeSuite = request.param
    return EnclaveKeyPair.generate(suite)


@pytest.fixture(scope="module")
def x_pair() -> EnclaveKeyPair:
    return EnclaveKeyPair.generate(SUITE_X25519)


@pytest.fixture(scope="module")
def envelope(x_pair: EnclaveKeyPair) -> bytes:
    return seal_request(x_pair.public_key, JPEG, RequestOptions(top_k=3)).envelope


def _ref_envelope(pair: EnclaveKeyPair, plaintext: bytes, header: bytes | None = None) -> bytes:
    """An HPKE-3 envelope around an arbitrary plaintext (the reference sealer)."""
    from sealed._envelope import request_header_bytes

    hdr = header if header is not None else request_header_bytes(pair.suite, pair.key_id)
    enc, ct = reference_seal_x25519(
        pair.public_key.raw, b"\x42" * 32, request_info(hdr), b"", plaintext
    )
    return assemble_request(hdr, enc, ct)


# ------------------------------------------------------------------------- round trips
@pytest.mark.parametrize(
    "options", [None, RequestOptions(top_k=3), RequestOptions(top_k=100, request_id="a.B:c-9_")]
)
def test_round_trip(pair: EnclaveKeyPair, options: RequestOptions | None) -> None:
    sealed = seal_request(pair.public_key, JPEG, options)
    assert sealed.suite == pair.suite and sealed.key_id == pair.key_id
    opened = open_request(sealed.envelope, pair)
    assert opened.jpeg == JPEG
    assert opened.options == (options or RequestOptions())
    assert opened.response_key == sealed.response_key
    assert len(opened.response_key) == pair.suite.aead_key_size
    assert opened.request_digest == hashlib.sha256(sealed.envelope).digest()
    answer = opened.seal_response(RESULT)
    got = sealed.open_response(answer)
    assert got == dataclasses.replace(RESULT, request_id=opened.options.request_id)
    failure = InferenceFailure("upstream-unavailable", "cloud inference did not answer")
    assert open_response(sealed, seal_response(opened, failure)) == dataclasses.replace(
        failure, request_id=opened.options.request_id
    )


def test_envelopes_are_randomized(x_pair: EnclaveKeyPair) -> None:
    a = seal_request(x_pair.public_key, JPEG)
    b = seal_request(x_pair.public_key, JPEG)
    assert a.envelope != b.envelope and a.response_key != b.response_key
    opened = open_request(a.envelope, x_pair)
    assert opened.seal_response(RESULT) != opened.seal_response(RESULT)  # fresh nonces


def test_envelope_layout(pair: EnclaveKeyPair) -> None:
    env = seal_request(pair.public_key, JPEG, padding_block=1).envelope
    suite = pair.suite
    magic, version, kind, kem, kdf, aead, key_id = struct.unpack_from(">4sBBHHH16s", env)
    assert (magic, version, kind) == (b"PMC2", 1, 1)
    assert (kem, kdf, aead) == suite.ids
    assert key_id == pair.key_id.value
    (enc_len,) = struct.unpack_from(">H", env, 28)
    assert enc_len == suite.enc_size
    (ct_len,) = struct.unpack_from(">I", env, 30 + enc_len)
    assert 34 + enc_len + ct_len == len(env)
    # unpadded plaintext: Nk + 2 + len(options) + 4 + len(jpeg); plus the 16-byte tag
    options = RequestOptions().to_bytes()
    assert ct_len == suite.aead_key_size + 2 + len(options) + 4 + len(JPEG) + 16
    header = peek_request_header(env)
    assert (header.version, header.suite, header.key_id) == (1, suite, pair.key_id)


@pytest.mark.parametrize("block", [1, 256, 1024, 4096])
def test_request_padding(x_pair: EnclaveKeyPair, block: int) -> None:
    env = seal_request(x_pair.public_key, JPEG, padding_block=block).envelope
    ct_len = len(env) - (34 + 32)
    assert (ct_len - 16) % block == 0
    assert open_request(env, x_pair).jpeg == JPEG


def test_padding_is_capped_by_the_envelope_limit(x_pair: EnclaveKeyPair) -> None:
    limits = Limits(max_envelope_bytes=4096, max_jpeg_bytes=4000)
    env = seal_request(x_pair.public_key, b"\xff" * 3000, limits=limits, padding_block=65536)
    assert len(env.envelope) == 4096
    assert open_request(env.envelope, x_pair, limits=limits).jpeg == b"\xff" * 3000


def test_response_padding(x_pair: EnclaveKeyPair) -> None:
    sealed = seal_request(x_pair.public_key, JPEG)
    opened = open_request(sealed.envelope, x_pair)
    for block in (1, 64, 256):
        answer = opened.seal_response(RESULT, padding_block=block)
        assert (len(answer) - 24 - 16) % block == 0
        assert sealed.open_response(answer) == RESULT
    with pytest.raises(ValueError):
        opened.seal_response(RESULT, padding_block=0)


# -------------------------------------------------------------------------------- keys
def test_key_id_definition(pair: EnclaveKeyPair) -> None:
    kem, kdf, aead = pair.suite.ids
    material = (
        b"pmc2-sealed-v1 key-id\x00" + struct.pack(">HHH", kem, kdf, aead) + pair.public_key.raw
    )
    assert pair.key_id.value == hashlib.sha256(material).digest()[:16]
    assert KeyId.from_hex(str(pair.key_id)) == pair.key_id
    assert repr(pair.key_id) == f"KeyId({pair.key_id.hex!r})"


@pytest.mark.parametrize("text", ["", "00" * 15, "AB" * 16, "zz" * 16, "00" * 17])
def test_key_id_text_is_strict(text: str) -> None:
    with pytest.raises(MalformedError):
        KeyId.from_hex(text)


def test_private_key_round_trip(pair: EnclaveKeyPair) -> None:
    with pytest.warns(InsecureKeyExportWarning):
        private = pair.export_private_bytes_insecure()
    assert len(private) == 32
    again = EnclaveKeyPair.from_private_bytes(pair.suite, private)
    assert again.public_key == pair.public_key and again.key_id == pair.key_id
    assert "private" not in repr(pair) and private.hex() not in repr(pair)


def test_xwing_key_layout() -> None:
    seed = bytes(range(32))
    pair = EnclaveKeyPair.from_private_bytes(SUITE_MLKEM768_X25519, seed)
    expanded = hashlib.shake_256(seed).digest(96)
    assert _xwing_expand(seed) == (expanded[:64], expanded[64:])
    pk_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).public_key()
    pk_x = x25519.X25519PrivateKey.from_private_bytes(expanded[64:]).public_key()
    assert pair.public_key.raw == pk_m.public_bytes_raw() + pk_x.public_bytes_raw()
    assert len(pair.public_key.raw) == 1216


@pytest.mark.parametrize("suite", SUPPORTED_SUITES, ids=SUITE_IDS)
@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_private_key_length(suite: HpkeSuite, length: int) -> None:
    with pytest.raises(MalformedError):
        EnclaveKeyPair.from_private_bytes(suite, b"\x01" * length)


def test_generate_defaults_to_hpke3() -> None:
    assert DEFAULT_SUITE == SUITE_X25519
    assert EnclaveKeyPair.generate().suite.name == "HPKE-3"


def test_jwk_forms(pair: EnclaveKeyPair) -> None:
    jwk = pair.public_key.to_jwk()
    raw = pair.public_key.raw
    b64 = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    if pair.suite is SUITE_X25519:
        assert jwk == {
            "kty": "OKP",
            "crv": "X25519",
            "x": b64,
            "alg": "HPKE-3",
            "kid": pair.key_id.hex,
        }
    else:
        assert jwk == {"kty": "AKP", "alg": "HPKE-9", "pub": b64, "kid": pair.key_id.hex}
    assert EnclavePublicKey.from_jwk(jwk) == pair.public_key
    bare = {k: v for k, v in jwk.items() if k != "kid"}
    assert EnclavePublicKey.from_jwk({**bare, "use": "enc"}) == pair.public_key


def test_x25519_jwk_alg_is_optional(x_pair: EnclaveKeyPair) -> None:
    jwk = {k: v for k, v in x_pair.public_key.to_jwk().items() if k in {"kty", "crv", "x"}}
    assert EnclavePublicKey.from_jwk(jwk) == x_pair.public_key


def _jwk_variants(jwk: dict[str, str]) -> list[dict[str, object]]:
    key_member = "x" if jwk["kty"] == "OKP" else "pub"
    value = jwk[key_member]
    return [
        {**jwk, "kty": "EC"},
        {**jwk, "kty": "AKP" if jwk["kty"] == "OKP" else "OKP"},
        {**jwk, "alg": "HPKE-4"},
        {**jwk, "alg": "HPKE-9" if jwk["alg"] == "HPKE-3" else "HPKE-3"},
        {**jwk, "crv": "X448"},
        {**jwk, key_member: value + "="},
        {**jwk, key_member: value[:-2]},
        {**jwk, key_member: value + "AA"},
        {**jwk, key_member: value.replace(value[0], "+", 1)},
        {**jwk, key_member: 12},
        {**jwk, "kid": "00" * 16},
        {**jwk, "d": "AAAA"},
        {**jwk, "priv": "AAAA"},
        {k: v for k, v in jwk.items() if k != key_member},
    ]


def test_jwk_is_strict(pair: EnclaveKeyPair) -> None:
    for variant in _jwk_variants(pair.public_key.to_jwk()):
        if variant.get("crv") == "X448" and variant["kty"] == "AKP":
            continue  # crv is ignored for AKP keys
        with pytest.raises(MalformedError):
            EnclavePublicKey.from_jwk(variant)


def test_public_key_length_is_checked() -> None:
    with pytest.raises(MalformedError):
        EnclavePublicKey(SUITE_X25519, b"\x00" * 31)
    with pytest.raises(MalformedError):
        EnclavePublicKey(SUITE_MLKEM768_X25519, b"\x00" * 1215)
    with pytest.raises(MalformedError):  # ML-KEM encapsulation key check (coefficients < q)
        EnclavePublicKey(SUITE_MLKEM768_X25519, b"\xff" * 1216)


# ------------------------------------------------------------------------------ suites
def test_suite_identifiers() -> None:
    assert SUITE_X25519.ids == (0x0020, 0x0001, 0x0001)
    assert SUITE_MLKEM768_X25519.ids == (0x647A, 0x0011, 0x0002)
    assert (SUITE_X25519.enc_size, SUITE_X25519.public_key_size) == (32, 32)
    assert (SUITE_MLKEM768_X25519.enc_size, SUITE_MLKEM768_X25519.public_key_size) == (1120, 1216)
    assert HpkeSuite.from_ids(0x647A, 0x0011, 0x0002) is not None
    for ids in [(0x0020, 0x0001, 0x0002), (0x647A, 0x0001, 0x0001), (0x0021, 1, 1), (0, 0, 0)]:
        with pytest.raises(UnsupportedSuiteError):
            HpkeSuite.from_ids(*ids)


# ------------------------------------------------------------------------- error paths
def test_error_classes_are_distinct() -> None:
    classes: list[type[SealedError]] = [
        MalformedError,
        OversizedError,
        UnsupportedVersionError,
        UnsupportedSuiteError,
        WrongSuiteError,
        UnknownKeyError,
        DecryptionError,
    ]
    assert len({c.code for c in classes}) == len(classes)
    for cls in classes:
        assert issubclass(cls, SealedError)
        assert 400 <= cls.http_status < 500
    assert OversizedError.http_status == 413 and UnknownKeyError.http_status == 421


def test_oversized_is_checked_before_anything(x_pair: EnclaveKeyPair) -> None:
    limits = Limits(max_envelope_bytes=2048)
    with pytest.raises(OversizedError):
        open_request(b"garbage" * 400, x_pair, limits=limits)
    with pytest.raises(OversizedError):
        peek_request_header(b"\x00" * (DEFAULT_LIMITS.max_envelope_bytes + 1))


def test_every_truncation_is_malformed(envelope: bytes, x_pair: EnclaveKeyPair) -> None:
    for length in range(len(envelope)):
        with pytest.raises(MalformedError):
            open_request(envelope[:length], x_pair)


def test_trailing_bytes(envelope: bytes, x_pair: EnclaveKeyPair) -> None:
    with pytest.raises(MalformedError, match="trailing"):
        open_request(envelope + b"\x00", x_pair)


def test_bad_magic_and_type(envelope: bytes, x_pair: EnclaveKeyPair) -> None:
    with pytest.raises(MalformedError, match="magic"):
        open_request(b"XMC2" + envelope[4:], x_pair)
    with pytest.raises(MalformedError, match="type"):
        open_request(envelope[:5] + b"\x02" + envelope[6:], x_pair)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unsupported_version(envelope: bytes, x_pair: EnclaveKeyPair, version: int) -> None:
    with pytest.raises(UnsupportedVersionError) as info:
        open_request(envelope[:4] + bytes([version]) + envelope[5:], x_pair)
    assert info.value.version == version


def test_unsupported_suite(envelope: bytes, x_pair: EnclaveKeyPair) -> None:
    bad = envelope[:6] + struct.pack(">HHH", 0x0020, 0x0001, 0x0003) + envelope[12:]
    with pytest.raises(UnsupportedSuiteError) as info:
        open_request(bad, x_pair)
    assert (info.value.kem_id, info.value.kdf_id, info.value.aead_id) == (0x20, 1, 3)


def test_wrong_suite(x_pair: EnclaveKeyPair) -> None:
    # A well-framed HPKE-9 envelope addressed to the HPKE-3 key's id.
    from sealed._envelope import request_header_bytes

    header = request_header_bytes(SUITE_MLKEM768_X25519, x_pair.key_id)
    forged = assemble_request(header, b"\x00" * 1120, b"\x00" * 64)
    with pytest.raises(WrongSuiteError):
        open_request(forged, x_pair)


def test_unknown_key_carries_current_key_id(envelope: bytes, x_pair: EnclaveKeyPair) -> None:
    current = EnclaveKeyPair.generate()
    with pytest.raises(UnknownKeyError) as info:
        open_request(envelope, [current, EnclaveKeyPair.generate()])
    assert info.value.current_key_id == current.key_id.hex
    assert info.value.key_id == x_pair.key_id.hex
    # after rotation the enclave may still accept the previous key
    assert open_request(envelope, [current, x_pair]).jpeg == JPEG


def test_open_request_needs_a_key(envelope: bytes) -> None:
    with pytest.raises(ValueError):
        open_request(envelope, [])


def test_decryption_failures(envelope: bytes, x_pair: EnclaveKeyPair) -> None:
    enc_at, ct_at = 30, 34 + 32
    for index in (enc_at, enc_at + 31, ct_at, len(envelope) - 17, len(envelope) - 1):
        tampered = bytearray(envelope)
        tampered[index] ^= 0x80
        with pytest.raises(DecryptionError):
            open_request(bytes(tampered), x_pair)


def test_every_header_bit_flip_is_refused(envelope: bytes, x_pair: EnclaveKeyPair) -> None:
    for index in range(34):  # the header, enc_len and the start of enc
        for bit in range(8):
            tampered = bytearray(envelope)
            tampered[index] ^= 1 << bit
            with pytest.raises(SealedError):
                open_request(bytes(tampered), x_pair)


def test_key_id_substitution_fails_cryptographically(x_pair: EnclaveKeyPair) -> None:
    """Sealed to key A, relabelled for key B (both held): B cannot open it."""
    other = EnclaveKeyPair.generate()
    env = seal_request(x_pair.public_key, JPEG).envelope
    relabelled = env[:12] + other.key_id.value + env[28:]
    with pytest.raises(DecryptionError):
        open_request(relabelled, [x_pair, other])


def test_header_is_bound_through_info(x_pair: EnclaveKeyPair) -> None:
    """HPKE info covers the header: a ciphertext made for a different header is refused."""
    from sealed._envelope import request_header_bytes

    header = request_header_bytes(x_pair.suite, x_pair.key_id)
    plaintext = request_plaintext(b"k" * 16, RequestOptions().to_bytes(), JPEG, 2048)
    other_header = header[:5] + b"\x09" + header[6:]
    enc, ct = reference_seal_x25519(
        x_pair.public_key.raw, b"\x07" * 32, request_info(other_header), b"", plaintext
    )
    with pytest.raises(DecryptionError):
        open_request(assemble_request(header, enc, ct), x_pair)
    # the same plaintext under the right info opens (the reference sealer agrees)
    enc, ct = reference_seal_x25519(
        x_pair.public_key.raw, b"\x07" * 32, request_info(header), b"", plaintext
    )
    assert open_request(assemble_request(header, enc, ct), x_pair).jpeg == JPEG


# ------------------------------------------------------------ inner plaintext checks
def _plain(
    key: bytes = b"k" * 16,
    options: bytes = b'{"top_k":1}',
    jpeg: bytes = JPEG,
    *,
    options_len: int | None = None,
    jpeg_len: int | None = None,
    tail: bytes = b"",
) -> bytes:
    olen = len(options) if options_len is None else options_len
    jlen = len(jpeg) if jpeg_len is None else jpeg_len
    return key + struct.pack(">H", olen) + options + struct.pack(">I", jlen) + jpeg + tail


@pytest.mark.parametrize(
    ("plaintext", "error"),
    [
        (b"", MalformedError),
        (b"k" * 17, MalformedError),
        (_plain(options_len=2000), OversizedError),
        (_plain(options_len=300), MalformedError),
        (_plain(options=b'{"top_k": 1}'), MalformedError),
        (_plain(options=b'{"top_k":1,"top_k":2}'), MalformedError),
        (_plain(options=b'{"top_k":1.0}'), MalformedError),
        (_plain(options=b'{"top_k":true}'), MalformedError),
        (_plain(options=b'{"top_k":0}'), MalformedError),
        (_plain(options=b'{"top_k":101}'), MalformedError),
        (_plain(options=b'{"top_k":1,"x":1}'), MalformedError),
        (_plain(options=b"{}"), MalformedError),
        (_plain(options=b'{"request_id":"a b","top_k":1}'), MalformedError),
        (_plain(options=b"[1]"), MalformedError),
        (_plain(options=b"\xff"), MalformedError),
        (_plain(jpeg=b"", jpeg_len=0), MalformedError),
        (_plain(jpeg_len=len(JPEG) + 1), MalformedError),
        (_plain(jpeg_len=5 * 1024 * 1024), OversizedError),
        (_plain(tail=b"\x00\x00\x01"), MalformedError),
    ],
)
def test_inner_plaintext_is_strict(
    x_pair: EnclaveKeyPair, plaintext: bytes, error: type[SealedError]
) -> None:
    with pytest.raises(error):
        open_request(_ref_envelope(x_pair, plaintext), x_pair)


def test_inner_plaintext_zero_padding_accepted(x_pair: EnclaveKeyPair) -> None:
    opened = open_request(_ref_envelope(x_pair, _plain(tail=b"\x00" * 100)), x_pair)
    assert opened.jpeg == JPEG and opened.response_key == b"k" * 16


# ------------------------------------------------------------------------------ limits
def test_seal_limits(x_pair: EnclaveKeyPair) -> None:
    limits = Limits(max_jpeg_bytes=1000)
    with pytest.raises(OversizedError):
        seal_request(x_pair.public_key, b"\xff" * 1001, limits=limits)
    with pytest.raises(OversizedError):
        seal_request(x_pair.public_key, b"\xff" * 1000, limits=Limits(max_envelope_bytes=1024))
    with pytest.raises(OversizedError):
        seal_request(
            x_pair.public_key,
            JPEG,
            RequestOptions(top_k=5, request_id="x" * 64),
            limits=Limits(max_options_bytes=16),
        )
    with pytest.raises(MalformedError):
        seal_request(x_pair.public_key, b"")


def test_open_limits(x_pair: EnclaveKeyPair) -> None:
    env = seal_request(x_pair.public_key, JPEG).envelope
    with pytest.raises(OversizedError):  # the JPEG inside exceeds a stricter limit
        open_request(env, x_pair, limits=Limits(max_jpeg_bytes=len(JPEG) - 1))
    with pytest.raises(OversizedError):  # the options exceed a stricter limit
        open_request(
            seal_request(x_pair.public_key, JPEG, RequestOptions(request_id="r" * 64)).envelope,
            x_pair,
            limits=Limits(max_options_bytes=32),
        )


def test_limits_validation() -> None:
    for bad in (
        {"max_envelope_bytes": 0},
        {"max_jpeg_bytes": -1},
        {"max_options_bytes": 2**16},
        {"max_response_bytes": True},
    ):
        with pytest.raises(ValueError):
            Limits(**bad)


def test_response_limits(x_pair: EnclaveKeyPair) -> None:
    sealed = seal_request(x_pair.public_key, JPEG)
    opened = open_request(sealed.envelope, x_pair)
    answer = opened.seal_response(RESULT)
    with pytest.raises(OversizedError):
        sealed.open_response(answer + b"\x00" * DEFAULT_LIMITS.max_response_bytes)
    big = InferenceResult(
        label=0, top_k=tuple(ScoredLabel(i, 1000 - i) for i in range(100)), label_name="x" * 64
    )
    with pytest.raises(OversizedError):
        opened.seal_response(big, limits=Limits(max_response_bytes=1024))


# ---------------------------------------------------------------------------- responses
@pytest.fixture(scope="module")
def exchange(x_pair: EnclaveKeyPair) -> tuple[SealedRequest, OpenedRequest, bytes]:
    sealed = seal_request(x_pair.public_key, JPEG, RequestOptions(request_id="rid-1"))
    opened = open_request(sealed.envelope, x_pair)
    return sealed, opened, opened.seal_response(RESULT)


def test_every_response_byte_flip_is_refused(
    exchange: tuple[SealedRequest, OpenedRequest, bytes],
) -> None:
    sealed, _, answer = exchange
    assert sealed.open_response(answer).request_id == "rid-1"
    for index in range(len(answer)):
        tampered = bytearray(answer)
        tampered[index] ^= 0x01
        with pytest.raises(SealedError):
            sealed.open_response(bytes(tampered))
    for length in range(len(answer)):
        with pytest.raises(MalformedError):
            sealed.open_response(answer[:length])
    with pytest.raises(MalformedError):
        sealed.open_response(answer + b"\x00")


def test_response_header_errors(exchange: tuple[SealedRequest, OpenedRequest, bytes]) -> None:
    sealed, _, answer = exchange
    with pytest.raises(UnsupportedVersionError):
        sealed.open_response(answer[:4] + b"\x02" + answer[5:])
    with pytest.raises(MalformedError, match="type"):
        sealed.open_response(answer[:5] + b"\x01" + answer[6:])
    with pytest.raises(WrongSuiteError):
        sealed.open_response(answer[:6] + b"\x00\x02" + answer[8:])
    with pytest.raises(UnsupportedSuiteError):
        sealed.open_response(answer[:6] + b"\x00\x03" + answer[8:])
    with pytest.raises(DecryptionError):
        sealed.open_response(answer[:8] + bytes(12) + answer[20:])


def test_response_is_bound_to_its_request(
    exchange: tuple[SealedRequest, OpenedRequest, bytes],
) -> None:
    sealed, opened, _ = exchange
    # same response key, another request envelope: the associated data differs
    other = dataclasses.replace(opened, request_digest=hashlib.sha256(b"other").digest())
    with pytest.raises(DecryptionError):
        sealed.open_response(other.seal_response(RESULT))
    # another request's answer
    second = seal_request(EnclaveKeyPair.generate().public_key, JPEG)
    with pytest.raises(DecryptionError):
        second.open_response(opened.seal_response(RESULT))


def test_response_request_id_must_match(
    exchange: tuple[SealedRequest, OpenedRequest, bytes],
) -> None:
    sealed, opened, _ = exchange
    swapped = dataclasses.replace(opened, options=RequestOptions(request_id="rid-2"))
    with pytest.raises(MalformedError, match="request_id"):
        sealed.open_response(swapped.seal_response(RESULT))


def test_reprs_hide_secrets(exchange: tuple[SealedRequest, OpenedRequest, bytes]) -> None:
    sealed, opened, _ = exchange
    for text in (repr(sealed), repr(opened)):
        assert sealed.response_key.hex() not in text and "response_key" not in text
        assert "jpeg=" not in text and "envelope=" not in text


# -------------------------------------------------------------------- payload schemas
def test_options_canonical_bytes() -> None:
    assert RequestOptions().to_bytes() == b'{"top_k":1}'
    opts = RequestOptions(top_k=3, request_id="req-0001")
    assert opts.to_bytes() == b'{"request_id":"req-0001","top_k":3}'
    assert RequestOptions.from_bytes(opts.to_bytes()) == opts
    for bad in ({"top_k": 0}, {"top_k": True}, {"request_id": ""}, {"request_id": "x" * 65}):
        with pytest.raises(MalformedError):
            RequestOptions(**bad)


def test_response_body_encoding() -> None:
    from sealed._messages import decode_response_body, encode_response_body

    body = encode_response_body(dataclasses.replace(RESULT, request_id="r"))
    assert body == (
        b'{"label":7,"label_name":"horse","request_id":"r","status":"ok",'
        b'"timings_us":{"encode":550,"perturb":2616},'
        b'"top_k":[{"label":7,"score_ppm":800000},{"label":2,"score_ppm":150000},'
        b'{"label":9,"score_ppm":150000}]}'
    )
    assert decode_response_body(body) == dataclasses.replace(RESULT, request_id="r")
    failure = InferenceFailure("invalid-image", "bad JPEG")
    assert encode_response_body(failure) == (
        b'{"code":"invalid-image","message":"bad JPEG","status":"error"}'
    )
    for bad in (
        b'{"status":"maybe"}',
        b'{"code":"x","message":"","status":"error","extra":1}',
        b'{"code":"X","message":"","status":"error"}',
        b'{"label":1,"status":"ok","timings_us":{},"top_k":[]}',
        b'{"label":1,"status":"ok","timings_us":{},"top_k":[{"label":2,"score_ppm":1}]}',
        b'{"label":1,"status":"ok","timings_us":[],"top_k":[{"label":1,"score_ppm":1}]}',
        b'{"label":1,"status":"ok","timings_us":{"A":1},"top_k":[{"label":1,"score_ppm":1}]}',
        b'{"label":1,"status":"ok","timings_us":{},"top_k":[{"label":1,"score_ppm":1000001}]}',
        b'{"label":1,"status":"ok","timings_us":{},"top_k":{"label":1}}',
        b"[" * 5000 + b"]" * 5000,
        b"1" * 5000,
        b"",
    ):
        with pytest.raises(MalformedError):
            decode_response_body(bad)


def test_inference_result_invariants() -> None:
    with pytest.raises(MalformedError):  # scores must not increase
        InferenceResult(label=1, top_k=(ScoredLabel(1, 10), ScoredLabel(2, 20)))
    with pytest.raises(MalformedError):  # the first entry is the label
        InferenceResult(label=1, top_k=(ScoredLabel(2, 20),))
    with pytest.raises(MalformedError):  # labels are distinct
        InferenceResult(label=1, top_k=(ScoredLabel(1, 20), ScoredLabel(1, 10)))
    with pytest.raises(MalformedError):  # timing names are distinct
        InferenceResult(label=1, top_k=(ScoredLabel(1, 1),), timings_us=(("a", 1), ("a", 2)))
    result = InferenceResult(
        label=1, top_k=(ScoredLabel.from_probability(1, 0.5),), timings_us=(("z", 1), ("a", 2))
    )
    assert result.timings_us == (("a", 2), ("z", 1)) and result.timings == {"a": 2, "z": 1}
    assert result.top_k[0].score == 0.5
    with pytest.raises(MalformedError):
        ScoredLabel.from_probability(1, 1.5)
    with pytest.raises(MalformedError):
        InferenceFailure("Bad Code")


def test_problem_documents(envelope: bytes) -> None:
    current = EnclaveKeyPair.generate()
    with pytest.raises(UnknownKeyError) as info:
        open_request(envelope, current)
    problem = info.value.to_problem()
    assert problem["type"] == "urn:pmc2:sealed:unknown-key" and problem["status"] == 421
    assert problem["current_key_id"] == current.key_id.hex
    assert problem["title"] == "unknown key id" and isinstance(problem["detail"], str)
    assert DecryptionError("x").to_problem() == {
        "type": "urn:pmc2:sealed:decryption-failed",
        "title": "decryption failed",
        "status": 400,
        "detail": "x",
    }
