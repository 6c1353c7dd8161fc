"""Test vectors for docs/protocol.md, and the independent reference HPKE that makes them.

Run ``python -m sealed._vectors tests/vectors/sealed_v1.json`` to (re)generate the file.

The library seals with ``cryptography``'s HPKE, which draws its ephemeral key itself. To
publish request vectors whose every byte is reproducible, this module carries a small
reference implementation of HPKE base mode written from the specifications, using only
primitives (X25519, ML-KEM-768 decapsulation, HMAC-SHA256, SHAKE256, SHA3-256, AES-GCM):

* RFC 9180 sections 4 and 5 for DHKEM(X25519, HKDF-SHA256) with HKDF-SHA256 (two-stage
  key schedule); it takes the ephemeral private key as input, so ``HPKE-3`` request
  vectors are fully deterministic. It is checked against RFC 9180 appendix A.1.1 in the
  tests.
* draft-connolly-cfrg-xwing-kem (MLKEM768-X25519 decapsulation, the X-Wing combiner) and
  draft-ietf-hpke-hpke section 5.1 (the one-stage SHAKE256 key schedule) for ``HPKE-9``;
  only the *open* direction (ML-KEM encapsulation randomness cannot be fixed through
  ``cryptography``), so ``HPKE-9`` request vectors are (private key, envelope) ->
  plaintext: they are generated once with the library and then kept stable (an existing
  file's ``HPKE-9`` envelopes are reused when they still open to the same plaintext).

Response vectors are deterministic for both suites (fixed response key and nonce).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sealed._envelope import DEFAULT_LIMITS, Limits, parse_request, request_header_bytes
from sealed._errors import SealedError
from sealed._keys import EnclaveKeyPair, _xwing_expand
from sealed._messages import (
    BitstringSizes,
    InferenceFailure,
    InferenceResult,
    RequestOptions,
    ScoredLabel,
)
from sealed._protocol import (
    OpenedRequest,
    _parse_request_plaintext,
    assemble_request,
    open_request,
    request_info,
    request_plaintext,
    response_aad,
    seal_response_with_nonce,
)
from sealed._suites import SUITE_MLKEM768_X25519, SUITE_X25519, HpkeSuite, KdfId, KemId

__all__ = [
    "generate_vectors",
    "main",
    "reference_open",
    "reference_seal_x25519",
]

_HPKE_V1 = b"HPKE-v1"
_XWING_LABEL = bytes.fromhex("5c2e2f2f5e5c")  # "\.//^\" (X-Wing)
_NN = 12


# --------------------------------------------------------------- RFC 9180, two-stage KDF
def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or b"\x00" * 32, ikm, hashlib.sha256).digest()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _hkdf_extract(salt, _HPKE_V1 + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled = length.to_bytes(2, "big") + _HPKE_V1 + suite_id + label + info
    return _hkdf_expand(prk, labeled, length)


def _hpke_suite_id(suite: HpkeSuite) -> bytes:
    return b"HPKE" + b"".join(i.to_bytes(2, "big") for i in suite.ids)


def _key_schedule_two_stage(
    suite: HpkeSuite, shared_secret: bytes, info: bytes
) -> tuple[bytes, bytes]:
    """RFC 9180 section 5.1, base mode (empty psk and psk_id)."""
    sid = _hpke_suite_id(suite)
    psk_id_hash = _labeled_extract(sid, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(sid, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(sid, shared_secret, b"secret", b"")
    key = _labeled_expand(sid, secret, b"key", context, suite.aead_key_size)
    base_nonce = _labeled_expand(sid, secret, b"base_nonce", context, _NN)
    return key, base_nonce


def _dhkem_x25519_shared_secret(dh: bytes, enc: bytes, pk_r: bytes) -> bytes:
    """RFC 9180 section 4.1, ExtractAndExpand with kem_context = enc || pkRm."""
    kem_sid = b"KEM" + (0x0020).to_bytes(2, "big")
    eae_prk = _labeled_extract(kem_sid, b"", b"eae_prk", dh)
    return _labeled_expand(kem_sid, eae_prk, b"shared_secret", enc + pk_r, 32)


def reference_seal_x25519(
    pk_r: bytes, sk_e: bytes, info: bytes, aad: bytes, plaintext: bytes
) -> tuple[bytes, bytes]:
    """HPKE-3 base-mode single-shot seal with a *given* ephemeral key: ``(enc, ct)``."""
    ephemeral = x25519.X25519PrivateKey.from_private_bytes(sk_e)
    enc = ephemeral.public_key().public_bytes_raw()
    dh = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(pk_r))
    shared_secret = _dhkem_x25519_shared_secret(dh, enc, pk_r)
    key, base_nonce = _key_schedule_two_stage(SUITE_X25519, shared_secret, info)
    return enc, AESGCM(key).encrypt(base_nonce, plaintext, aad)


# ------------------------------------------- X-Wing + draft-ietf-hpke-hpke one-stage KDF
def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _key_schedule_one_stage(
    suite: HpkeSuite, shared_secret: bytes, info: bytes
) -> tuple[bytes, bytes]:
    """draft-ietf-hpke-hpke section 5.1 CombineSecrets_OneStage with SHAKE256 (Nh = 64)."""
    nk, nh = suite.aead_key_size, 64
    length = nk + _NN + nh
    secrets = _length_prefixed(b"") + _length_prefixed(shared_secret)
    context = b"\x00" + _length_prefixed(b"") + _length_prefixed(info)
    labeled = (
        secrets
        + _HPKE_V1
        + _hpke_suite_id(suite)
        + _length_prefixed(b"secret")
        + length.to_bytes(2, "big")
        + context
    )
    out = hashlib.shake_256(labeled).digest(length)
    return out[:nk], out[nk : nk + _NN]


def _xwing_decap(seed: bytes, enc: bytes) -> bytes:
    """X-Wing Decapsulate: SHA3-256(ss_M || ss_X || ct_X || pk_X || label)."""
    mlkem_seed, x25519_scalar = _xwing_expand(seed)
    sk_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed)
    sk_x = x25519.X25519PrivateKey.from_private_bytes(x25519_scalar)
    ct_m, ct_x = enc[:1088], enc[1088:]
    ss_m = sk_m.decapsulate(ct_m)
    ss_x = sk_x.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    pk_x = sk_x.public_key().public_bytes_raw()
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + _XWING_LABEL).digest()


def reference_open(
    suite: HpkeSuite, sk_r: bytes, enc: bytes, ciphertext: bytes, *, info: bytes, aad: bytes
) -> bytes:
    """HPKE base-mode single-shot open for either supported suite (raises on failure)."""
    if suite.kem is KemId.DHKEM_X25519_HKDF_SHA256:
        recipient = x25519.X25519PrivateKey.from_private_bytes(sk_r)
        pk_r = recipient.public_key().public_bytes_raw()
        dh = recipient.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
        shared_secret = _dhkem_x25519_shared_secret(dh, enc, pk_r)
    else:
        shared_secret = _xwing_decap(sk_r, enc)
    schedule: Callable[[HpkeSuite, bytes, bytes], tuple[bytes, bytes]] = (
        _key_schedule_one_stage if suite.kdf is KdfId.SHAKE256 else _key_schedule_two_stage
    )
    key, base_nonce = schedule(suite, shared_secret, info)
    return AESGCM(key).decrypt(base_nonce, ciphertext, aad)


# ------------------------------------------------------------------------ the vectors
def _fixed(label: str, length: int = 32) -> bytes:
    """Fixed 'random' bytes for vectors: SHAKE256 of a label."""
    return hashlib.shake_256(f"PMC2 sealed-v1 test vector: {label}".encode()).digest(length)


# A stand-in JPEG (SOI, APP0 "JFIF", ..., EOI): the protocol carries the bytes opaquely.
_JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + _fixed("jpeg", 40) + b"\xff\xd9"

_REQUEST_CASES: tuple[tuple[str, RequestOptions, int], ...] = (
    ("default-options", RequestOptions(), 1024),
    ("options-unpadded", RequestOptions(top_k=3, request_id="req-0001"), 1),
    # protocol.md 6.3.1: answers carrying the bit-string sizes (asked for in the options)
    ("sizes-batch-form", RequestOptions(top_k=2, request_id="req-0002", sizes=True), 256),
    ("sizes-single-form", RequestOptions(request_id="req-0003", sizes=True), 256),
)


def _keys() -> dict[str, EnclaveKeyPair]:
    return {
        SUITE_X25519.name: EnclaveKeyPair.from_private_bytes(SUITE_X25519, _fixed("HPKE-3 key")),
        SUITE_MLKEM768_X25519.name: EnclaveKeyPair.from_private_bytes(
            SUITE_MLKEM768_X25519, _fixed("HPKE-9 key")
        ),
    }


def _key_entry(pair: EnclaveKeyPair) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private = pair.export_private_bytes_insecure()
    return {
        "suite": pair.suite.name,
        "kem_id": int(pair.suite.kem),
        "kdf_id": int(pair.suite.kdf),
        "aead_id": int(pair.suite.aead),
        "private_key": private.hex(),
        "public_key": pair.public_key.raw.hex(),
        "key_id": pair.key_id.hex,
        "jwk": pair.public_key.to_jwk(),
    }


def _padded(suite: HpkeSuite, options: RequestOptions, block: int) -> int:
    unpadded = suite.aead_key_size + 2 + len(options.to_bytes()) + 4 + len(_JPEG)
    return -(-unpadded // block) * block


def _request_entry(
    pair: EnclaveKeyPair,
    name: str,
    options: RequestOptions,
    block: int,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    suite = pair.suite
    response_key = _fixed(f"{suite.name} {name} response key", suite.aead_key_size)
    header = request_header_bytes(suite, pair.key_id)
    info = request_info(header)
    plaintext = request_plaintext(
        response_key, options.to_bytes(), _JPEG, _padded(suite, options, block)
    )
    entry: dict[str, Any] = {
        "name": f"{suite.name}/{name}",
        "suite": suite.name,
        "key_id": pair.key_id.hex,
        "response_key": response_key.hex(),
        "options": options.to_bytes().decode("ascii"),
        "jpeg": _JPEG.hex(),
        "padding_block": block,
        "header": header.hex(),
        "info": info.hex(),
        "plaintext": plaintext.hex(),
    }
    if suite.kem is KemId.DHKEM_X25519_HKDF_SHA256:
        sk_e = _fixed(f"{suite.name} {name} ephemeral key")
        enc, ct = reference_seal_x25519(pair.public_key.raw, sk_e, info, b"", plaintext)
        entry["ephemeral_private_key"] = sk_e.hex()
        entry["deterministic"] = True
    else:
        enc, ct = _hybrid_enc_ct(pair, info, plaintext, previous)
        entry["deterministic"] = False
    entry["enc"] = enc.hex()
    entry["envelope"] = assemble_request(header, enc, ct).hex()
    return entry


def _hybrid_enc_ct(
    pair: EnclaveKeyPair, info: bytes, plaintext: bytes, previous: dict[str, Any] | None
) -> tuple[bytes, bytes]:
    """Reuse the previous file's envelope when it still opens to ``plaintext``."""
    suite = pair.suite
    if previous is not None:
        try:
            envelope = bytes.fromhex(previous["envelope"])
            parsed = parse_request(envelope, DEFAULT_LIMITS)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sk = pair.export_private_bytes_insecure()
            opened = reference_open(suite, sk, parsed.enc, parsed.ciphertext, info=info, aad=b"")
            if opened == plaintext and parsed.header_bytes.hex() == previous["header"]:
                return parsed.enc, parsed.ciphertext
        except (KeyError, ValueError, SealedError, TypeError):
            pass
    sealed = suite._hpke().encrypt(plaintext, pair.public_key._hpke_key(), info=info)
    return sealed[: suite.enc_size], sealed[suite.enc_size :]


_RESPONSES: dict[str, InferenceResult | InferenceFailure] = {
    "default-options": InferenceResult(
        label=3,
        top_k=(ScoredLabel(3, 912345),),
        label_name="cat",
        timings_us=(("open", 180), ("perturb", 2616), ("encode", 550), ("cloud", 1305)),
    ),
    "options-unpadded": InferenceFailure(
        code="invalid-image", message="the JPEG could not be decoded"
    ),
    # one stream for 32 images: 261 bytes, 8.16 bytes per image (no own size)
    "sizes-batch-form": InferenceResult(
        label=8,
        top_k=(ScoredLabel(8, 700000), ScoredLabel(0, 150000)),
        label_name="ship",
        timings_us=(("open", 175), ("perturb", 2616), ("encode", 550), ("cloud", 1305)),
        sizes=BitstringSizes(batch_images=32, batch_bitstring_bytes=261),
    ),
    # three strings of 9 + 8 + 10 bytes; this image's is the first
    "sizes-single-form": InferenceResult(
        label=1,
        top_k=(ScoredLabel(1, 880000),),
        label_name="automobile",
        timings_us=(("open", 170), ("perturb", 2600), ("encode", 560), ("cloud", 1290)),
        sizes=BitstringSizes(batch_images=3, batch_bitstring_bytes=27, bitstring_bytes=9),
    ),
}


def _response_entry(pair: EnclaveKeyPair, request: dict[str, Any]) -> dict[str, Any]:
    suite = pair.suite
    case = request["name"].split("/", 1)[1]
    envelope = bytes.fromhex(request["envelope"])
    opened = open_request(envelope, pair)
    nonce = _fixed(f"{request['name']} response nonce", _NN)
    block = 256
    sealed = seal_response_with_nonce(opened, _RESPONSES[case], nonce, padding_block=block)
    header = sealed[:20]
    aad = response_aad(header, opened.request_digest)
    plaintext = AESGCM(opened.response_key).decrypt(nonce, sealed[24:], aad)
    body_len = int.from_bytes(plaintext[:4], "big")
    return {
        "name": request["name"],
        "request": request["name"],
        "suite": suite.name,
        "request_digest": opened.request_digest.hex(),
        "response_key": opened.response_key.hex(),
        "nonce": nonce.hex(),
        "padding_block": block,
        "body": plaintext[4 : 4 + body_len].decode("ascii"),
        "header": header.hex(),
        "aad": aad.hex(),
        "plaintext": plaintext.hex(),
        "envelope": sealed.hex(),
    }


def _negative_entries(pair: EnclaveKeyPair, other: EnclaveKeyPair, good: bytes) -> list[Any]:
    """Invalid envelopes for ``pair`` and the error code each must produce."""

    def flip(data: bytes, index: int) -> bytes:
        return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]

    foreign_key_id = request_header_bytes(pair.suite, other.key_id)
    cases: list[tuple[str, bytes, str]] = [
        ("empty", b"", "malformed"),
        ("bad-magic", b"PMC3" + good[4:], "malformed"),
        ("version-2", good[:4] + b"\x02" + good[5:], "unsupported-version"),
        ("response-type", good[:5] + b"\x02" + good[6:], "malformed"),
        ("unknown-kem", good[:6] + b"\x00\x21" + good[8:], "unsupported-suite"),
        ("unknown-key-id", foreign_key_id + good[28:], "unknown-key"),
        ("truncated-header", good[:20], "malformed"),
        ("truncated-ciphertext", good[:-1], "malformed"),
        ("trailing-byte", good + b"\x00", "malformed"),
        ("enc-flipped", flip(good, 30), "decryption-failed"),
        ("ciphertext-flipped", flip(good, len(good) - 17), "decryption-failed"),
        ("tag-flipped", flip(good, len(good) - 1), "decryption-failed"),
    ]
    return [
        {
            "name": f"{pair.suite.name}/{name}",
            "suite": pair.suite.name,
            "envelope": data.hex(),
            "error": code,
        }
        for name, data, code in cases
    ]


def generate_vectors(previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """All vectors as a JSON-ready dict; ``previous`` supplies stable HPKE-9 envelopes."""
    keys = _keys()
    old_requests = {r["name"]: r for r in (previous or {}).get("requests", [])}
    requests: list[dict[str, Any]] = []
    responses: list[dict[str, Any]] = []
    negatives: list[dict[str, Any]] = []
    for suite_name, pair in keys.items():
        for name, options, block in _REQUEST_CASES:
            entry = _request_entry(
                pair, name, options, block, old_requests.get(f"{suite_name}/{name}")
            )
            requests.append(entry)
            responses.append(_response_entry(pair, entry))
        other = next(p for n, p in keys.items() if n != suite_name)
        first = next(r for r in requests if r["suite"] == suite_name)
        negatives.extend(_negative_entries(pair, other, bytes.fromhex(first["envelope"])))
    limits = Limits()
    return {
        "description": (
            "PMC2 sealed-request protocol v1 test vectors (docs/protocol.md, section 10). "
            "Generated by `python -m sealed._vectors`; all byte strings are lowercase hex."
        ),
        "limits": {
            "max_envelope_bytes": limits.max_envelope_bytes,
            "max_jpeg_bytes": limits.max_jpeg_bytes,
            "max_options_bytes": limits.max_options_bytes,
            "max_response_bytes": limits.max_response_bytes,
        },
        "keys": [_key_entry(pair) for pair in keys.values()],
        "requests": requests,
        "responses": responses,
        "invalid_requests": negatives,
    }


def check_opens(vectors: dict[str, Any]) -> None:
    """Open every request vector with the library and compare the parsed fields."""
    keys = _keys()
    for request in vectors["requests"]:
        opened: OpenedRequest = open_request(
            bytes.fromhex(request["envelope"]), keys[request["suite"]]
        )
        expected = _parse_request_plaintext(
            opened.suite, bytes.fromhex(request["plaintext"]), DEFAULT_LIMITS
        )
        if (opened.response_key, opened.options, opened.jpeg) != expected:
            raise AssertionError(f"vector {request['name']} does not open as recorded")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sealed._vectors", description=__doc__)
    parser.add_argument("output", type=Path, help="the JSON file to write")
    args = parser.parse_args(argv)
    output: Path = args.output
    previous = json.loads(output.read_text()) if output.exists() else None
    vectors = generate_vectors(previous)
    check_opens(vectors)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(vectors, indent=2) + "\n")
    print(
        f"wrote {output}: {len(vectors['requests'])} requests, "
        f"{len(vectors['responses'])} responses, "
        f"{len(vectors['invalid_requests'])} invalid requests"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
