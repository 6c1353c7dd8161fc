"""The published test vectors (tests/vectors/sealed_v1.json) and the reference HPKE."""

from __future__ import annotations

import hashlib
import json
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest

from sealed import (
    DEFAULT_LIMITS,
    SUITE_MLKEM768_X25519,
    SUITE_X25519,
    SUPPORTED_SUITES,
    EnclaveKeyPair,
    EnclavePublicKey,
    HpkeSuite,
    InferenceResult,
    InsecureKeyExportWarning,
    RequestOptions,
    SealedError,
    SealedRequest,
    open_request,
    seal_request,
)
from sealed._envelope import parse_request, request_header_bytes
from sealed._messages import decode_response_body
from sealed._protocol import (
    assemble_request,
    request_info,
    request_plaintext,
    seal_response_with_nonce,
)
from sealed._vectors import generate_vectors, reference_open, reference_seal_x25519

VECTORS_PATH = Path(__file__).parent / "vectors" / "sealed_v1.json"
SUITES = {suite.name: suite for suite in SUPPORTED_SUITES}


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
    return data


def _pair(vectors: dict[str, Any], suite_name: str) -> EnclaveKeyPair:
    entry = next(k for k in vectors["keys"] if k["suite"] == suite_name)
    return EnclaveKeyPair.from_private_bytes(
        SUITES[suite_name], bytes.fromhex(entry["private_key"])
    )


# ------------------------------------------------------------------ reference HPKE
def test_reference_hpke_matches_rfc9180_a11() -> None:
    """RFC 9180 appendix A.1.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM),
    base mode, sequence number 0."""
    sk_r = bytes.fromhex("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
    pk_r = bytes.fromhex("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
    sk_e = bytes.fromhex("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736")
    info = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
    aad = b"Count-0"
    plaintext = b"Beauty is truth, truth beauty"
    enc, ct = reference_seal_x25519(pk_r, sk_e, info, aad, plaintext)
    assert enc.hex() == "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431"
    assert ct.hex() == (
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
    )
    assert reference_open(SUITE_X25519, sk_r, enc, ct, info=info, aad=aad) == plaintext


@pytest.mark.parametrize("suite", SUPPORTED_SUITES, ids=[s.name for s in SUPPORTED_SUITES])
def test_reference_opens_library_envelopes(suite: HpkeSuite) -> None:
    """Two independent implementations agree: cryptography's HPKE (the library) and the
    reference (X-Wing combiner and the one-stage SHAKE256 schedule written out)."""
    pair = EnclaveKeyPair.generate(suite)
    sealed = seal_request(pair.public_key, b"\xff\xd8jpeg\xff\xd9", RequestOptions(top_k=2))
    parsed = parse_request(sealed.envelope, DEFAULT_LIMITS)
    with pytest.warns(InsecureKeyExportWarning):
        sk = pair.export_private_bytes_insecure()
    plaintext = reference_open(
        suite, sk, parsed.enc, parsed.ciphertext, info=request_info(parsed.header_bytes), aad=b""
    )
    assert plaintext[: suite.aead_key_size] == sealed.response_key
    assert b'{"top_k":2}' in plaintext and b"\xff\xd8jpeg\xff\xd9" in plaintext


def test_library_opens_reference_envelopes() -> None:
    pair = EnclaveKeyPair.generate(SUITE_X25519)
    header = request_header_bytes(pair.suite, pair.key_id)
    plaintext = request_plaintext(b"r" * 16, b'{"top_k":4}', b"\xff\xd8\xff", 64)
    enc, ct = reference_seal_x25519(
        pair.public_key.raw, b"\x01" * 32, request_info(header), b"", plaintext
    )
    opened = open_request(assemble_request(header, enc, ct), pair)
    assert (opened.response_key, opened.options.top_k, opened.jpeg) == (
        b"r" * 16,
        4,
        b"\xff\xd8\xff",
    )


# ------------------------------------------------------------------------ the vectors
def test_vectors_file_is_reproducible(vectors: dict[str, Any]) -> None:
    """Regenerating gives the committed file: HPKE-3 requests and all responses byte for
    byte; HPKE-9 requests are kept because they still open to the same plaintext."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert generate_vectors(vectors) == vectors


def test_keys(vectors: dict[str, Any]) -> None:
    assert {k["suite"] for k in vectors["keys"]} == {"HPKE-3", "HPKE-9"}
    for entry in vectors["keys"]:
        pair = _pair(vectors, entry["suite"])
        assert (entry["kem_id"], entry["kdf_id"], entry["aead_id"]) == pair.suite.ids
        assert pair.public_key.raw.hex() == entry["public_key"]
        assert pair.key_id.hex == entry["key_id"]
        assert EnclavePublicKey.from_jwk(entry["jwk"]) == pair.public_key


def test_request_vectors_open(vectors: dict[str, Any]) -> None:
    assert len(vectors["requests"]) == 8
    for entry in vectors["requests"]:
        suite = SUITES[entry["suite"]]
        pair = _pair(vectors, entry["suite"])
        envelope = bytes.fromhex(entry["envelope"])
        opened = open_request(envelope, pair)
        assert opened.response_key.hex() == entry["response_key"]
        assert opened.options.to_bytes().decode() == entry["options"]
        assert opened.jpeg.hex() == entry["jpeg"]
        # the documented plaintext layout
        plaintext = bytes.fromhex(entry["plaintext"])
        options = entry["options"].encode()
        jpeg = bytes.fromhex(entry["jpeg"])
        body = (
            bytes.fromhex(entry["response_key"])
            + struct.pack(">H", len(options))
            + options
            + struct.pack(">I", len(jpeg))
            + jpeg
        )
        assert plaintext[: len(body)] == body and not plaintext[len(body) :].strip(b"\x00")
        assert len(plaintext) % entry["padding_block"] == 0 or entry["padding_block"] == 1
        # the envelope layout
        header = bytes.fromhex(entry["header"])
        enc = bytes.fromhex(entry["enc"])
        assert envelope.startswith(header + struct.pack(">H", len(enc)) + enc)
        assert bytes.fromhex(entry["info"]) == b"pmc2-sealed-v1 request\x00" + header
        # an independent open of the same bytes
        parsed = parse_request(envelope, DEFAULT_LIMITS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk = pair.export_private_bytes_insecure()
        assert (
            reference_open(
                suite, sk, parsed.enc, parsed.ciphertext, info=request_info(header), aad=b""
            )
            == plaintext
        )
        if entry["deterministic"]:
            enc2, ct2 = reference_seal_x25519(
                pair.public_key.raw,
                bytes.fromhex(entry["ephemeral_private_key"]),
                request_info(header),
                b"",
                plaintext,
            )
            assert enc2 == enc and parsed.ciphertext == ct2


def test_response_vectors(vectors: dict[str, Any]) -> None:
    requests = {r["name"]: r for r in vectors["requests"]}
    assert len(vectors["responses"]) == 8
    for entry in vectors["responses"]:
        request = requests[entry["request"]]
        suite = SUITES[entry["suite"]]
        pair = _pair(vectors, entry["suite"])
        envelope = bytes.fromhex(request["envelope"])
        assert hashlib.sha256(envelope).hexdigest() == entry["request_digest"]
        opened = open_request(envelope, pair)
        sealed = SealedRequest(
            envelope=envelope,
            suite=suite,
            key_id=pair.key_id,
            options=RequestOptions.from_bytes(request["options"].encode()),
            response_key=bytes.fromhex(entry["response_key"]),
        )
        answer = sealed.open_response(bytes.fromhex(entry["envelope"]))
        assert answer == decode_response_body(entry["body"].encode())
        # exact bytes with the fixed nonce
        resealed = seal_response_with_nonce(
            opened, answer, bytes.fromhex(entry["nonce"]), padding_block=entry["padding_block"]
        )
        assert resealed.hex() == entry["envelope"]
        assert bytes.fromhex(entry["aad"]) == (
            b"pmc2-sealed-v1 response\x00"
            + bytes.fromhex(entry["header"])
            + bytes.fromhex(entry["request_digest"])
        )
    kinds = {type(decode_response_body(e["body"].encode())) for e in vectors["responses"]}
    assert InferenceResult in kinds and len(kinds) == 2


def test_sizes_vectors(vectors: dict[str, Any]) -> None:
    """protocol.md 6.3.1: the requests asking for ``sizes`` get answers carrying them, in
    the batch form (no own size) and the single form; the other answers carry none."""
    requests = {r["name"]: r for r in vectors["requests"]}
    seen = set()
    for entry in vectors["responses"]:
        asked = RequestOptions.from_bytes(requests[entry["request"]]["options"].encode()).sizes
        answer = decode_response_body(entry["body"].encode())
        if isinstance(answer, InferenceResult):
            assert (answer.sizes is not None) == asked, entry["name"]
            if answer.sizes is not None:
                seen.add(answer.sizes.bitstring_bytes is None)
        assert ('"sizes":' in entry["body"]) == asked, entry["name"]
    assert seen == {True, False}


def test_invalid_request_vectors(vectors: dict[str, Any]) -> None:
    keys = [_pair(vectors, "HPKE-3"), _pair(vectors, "HPKE-9")]
    assert len(vectors["invalid_requests"]) == 24
    for entry in vectors["invalid_requests"]:
        own = keys[0] if entry["suite"] == "HPKE-3" else keys[1]
        with pytest.raises(SealedError) as info:
            open_request(bytes.fromhex(entry["envelope"]), own)
        assert info.value.code == entry["error"], entry["name"]


def test_hybrid_vector_is_xwing(vectors: dict[str, Any]) -> None:
    entry = next(k for k in vectors["keys"] if k["suite"] == "HPKE-9")
    assert entry["kem_id"] == 0x647A and len(bytes.fromhex(entry["public_key"])) == 1216
    assert SUITE_MLKEM768_X25519.name == "HPKE-9"


def test_protocol_document_example_matches_vectors(vectors: dict[str, Any]) -> None:
    """docs/protocol.md's worked example quotes the vector file."""
    text = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    entry = next(r for r in vectors["requests"] if r["name"] == "HPKE-3/options-unpadded")
    for value in (
        entry["key_id"],
        entry["ephemeral_private_key"],
        entry["enc"],
        entry["response_key"],
        vectors["keys"][0]["public_key"],
    ):
        assert value in text
    assert f"({len(bytes.fromhex(entry['envelope']))} bytes)" in text
