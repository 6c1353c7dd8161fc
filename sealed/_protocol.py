"""Sealing and opening: the four operations of the protocol.

* client: :func:`seal_request` (HPKE to the enclave's key, with a fresh response key) and
  :func:`open_response` (via the returned :class:`SealedRequest`);
* enclave: :func:`open_request` (giving an :class:`OpenedRequest`) and
  :func:`seal_response`.

Specification: docs/protocol.md, sections 4 to 6. The HPKE ``info`` binds the whole
request header (magic, version, type, suite ids, key id); HPKE itself binds ``enc``; the
response AEAD's associated data binds the response header and SHA-256 of the entire
request envelope. No header field can therefore be changed without decryption failing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sealed._envelope import (
    DEFAULT_LIMITS,
    NONCE_SIZE,
    REQUEST_HEADER_SIZE,
    RESPONSE_HEADER_SIZE,
    TAG_SIZE,
    Limits,
    parse_request,
    parse_response,
    read_u16,
    read_u32,
    request_header_bytes,
    response_header_bytes,
    u16,
    u32,
)
from sealed._errors import (
    DecryptionError,
    MalformedError,
    OversizedError,
    UnknownKeyError,
    UnsupportedSuiteError,
    WrongSuiteError,
)
from sealed._keys import EnclaveKeyPair, EnclavePublicKey, KeyId
from sealed._messages import (
    InferenceResponse,
    InferenceResult,
    RequestOptions,
    decode_response_body,
    encode_response_body,
)
from sealed._suites import AeadId, HpkeSuite

__all__ = [
    "DEFAULT_REQUEST_PADDING",
    "DEFAULT_RESPONSE_PADDING",
    "REQUEST_INFO_LABEL",
    "RESPONSE_AAD_LABEL",
    "OpenedRequest",
    "SealedRequest",
    "open_request",
    "open_response",
    "seal_request",
    "seal_response",
]

REQUEST_INFO_LABEL = b"pmc2-sealed-v1 request\x00"
RESPONSE_AAD_LABEL = b"pmc2-sealed-v1 response\x00"
DEFAULT_REQUEST_PADDING = 1024
DEFAULT_RESPONSE_PADDING = 256
_MAX_PADDING_BLOCK = 1 << 20


def request_info(header_bytes: bytes) -> bytes:
    """HPKE ``info`` of a request: the label and the 28 header bytes (protocol.md 4.3)."""
    return REQUEST_INFO_LABEL + header_bytes


def response_aad(header_bytes: bytes, request_digest: bytes) -> bytes:
    """AEAD associated data of a response (protocol.md 5.3)."""
    return RESPONSE_AAD_LABEL + header_bytes + request_digest


def _padding_block(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("a padding block is an integer")
    if not 1 <= value <= _MAX_PADDING_BLOCK:
        raise ValueError(f"a padding block is an integer in 1..{_MAX_PADDING_BLOCK}")
    return value


def _padded_length(unpadded: int, block: int, maximum: int) -> int:
    """Round up to a multiple of ``block``, but never beyond ``maximum`` (protocol.md 6.1)."""
    padded = -(-unpadded // block) * block
    return min(padded, maximum)


def request_plaintext(
    response_key: bytes, options: bytes, jpeg: bytes, padded_length: int
) -> bytes:
    """The request plaintext (protocol.md 6.1): key, options, JPEG, zero padding."""
    body = response_key + u16(len(options)) + options + u32(len(jpeg)) + jpeg
    return body + b"\x00" * (padded_length - len(body))


def assemble_request(header_bytes: bytes, enc: bytes, ciphertext: bytes) -> bytes:
    """Concatenate a request envelope (protocol.md 4.1)."""
    return header_bytes + u16(len(enc)) + enc + u32(len(ciphertext)) + ciphertext


@dataclass(frozen=True)
class SealedRequest:
    """What ``seal_request`` returns: the ``envelope`` bytes to POST, and the state the
    client needs to open the answer (keep it until the answer arrives)."""

    envelope: bytes = field(repr=False)
    suite: HpkeSuite
    key_id: KeyId
    options: RequestOptions
    response_key: bytes = field(repr=False)

    @property
    def request_digest(self) -> bytes:
        return hashlib.sha256(self.envelope).digest()

    def open_response(self, data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> InferenceResponse:
        return open_response(self, data, limits=limits)


@dataclass(frozen=True)
class OpenedRequest:
    """An opened request, inside the enclave: the JPEG, the options, and the state to
    seal the answer (``response_key``, ``request_digest``)."""

    key_id: KeyId
    suite: HpkeSuite
    jpeg: bytes = field(repr=False)
    options: RequestOptions
    request_digest: bytes
    response_key: bytes = field(repr=False)

    def seal_response(
        self,
        response: InferenceResponse,
        *,
        padding_block: int = DEFAULT_RESPONSE_PADDING,
        limits: Limits = DEFAULT_LIMITS,
    ) -> bytes:
        return seal_response(self, response, padding_block=padding_block, limits=limits)


def seal_request(
    public_key: EnclavePublicKey,
    jpeg: bytes | bytearray | memoryview,
    options: RequestOptions | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    padding_block: int = DEFAULT_REQUEST_PADDING,
) -> SealedRequest:
    """Seal ``jpeg`` and ``options`` to the enclave's (attested) ``public_key``.

    A fresh response key of Nk bytes is drawn from the OS CSPRNG; the plaintext is padded
    with zeros to a multiple of ``padding_block`` bytes (1 disables padding), capped so
    the envelope stays within ``limits.max_envelope_bytes``. The caller must have verified
    the attestation that vouches for ``public_key`` first.
    """
    opts = options if options is not None else RequestOptions()
    suite = public_key.suite
    response_key = os.urandom(suite.aead_key_size)
    header = request_header_bytes(suite, public_key.key_id)
    plaintext = _build_request_plaintext(
        suite,
        response_key=response_key,
        options=opts,
        jpeg=bytes(jpeg) if isinstance(jpeg, bytearray | memoryview) else jpeg,
        limits=limits,
        padding_block=padding_block,
    )
    sealed = suite._hpke().encrypt(plaintext, public_key._hpke_key(), info=request_info(header))
    envelope = assemble_request(header, sealed[: suite.enc_size], sealed[suite.enc_size :])
    return SealedRequest(envelope, suite, public_key.key_id, opts, response_key)


def _build_request_plaintext(
    suite: HpkeSuite,
    *,
    response_key: bytes,
    options: RequestOptions,
    jpeg: bytes,
    limits: Limits,
    padding_block: int,
) -> bytes:
    block = _padding_block(padding_block)
    if not isinstance(jpeg, bytes) or not jpeg:
        raise MalformedError("the JPEG is a non-empty byte string")
    if len(jpeg) > limits.max_jpeg_bytes:
        raise OversizedError(f"JPEG of {len(jpeg)} bytes exceeds {limits.max_jpeg_bytes}")
    opts = options.to_bytes()
    if len(opts) > limits.max_options_bytes:
        raise OversizedError(f"options of {len(opts)} bytes exceed {limits.max_options_bytes}")
    overhead = REQUEST_HEADER_SIZE + 2 + suite.enc_size + 4 + TAG_SIZE
    unpadded = suite.aead_key_size + 2 + len(opts) + 4 + len(jpeg)
    if overhead + unpadded > limits.max_envelope_bytes:
        raise OversizedError("the request would exceed the maximum envelope size")
    padded = _padded_length(unpadded, block, limits.max_envelope_bytes - overhead)
    return request_plaintext(response_key, opts, jpeg, padded)


def open_request(
    data: bytes,
    keys: EnclaveKeyPair | Sequence[EnclaveKeyPair],
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> OpenedRequest:
    """Open a request envelope with one of the enclave's ``keys`` (the first is current).

    Checklist (protocol.md 4.2 and 6.1): 1-8. the framing checks of ``parse_request``
    (size first, before any cryptography); 9. a key with the envelope's key id is held
    (else ``UnknownKeyError`` carrying the current key id); 10. the envelope's suite is
    that key's suite (else ``WrongSuiteError``); 11. HPKE base-mode open with the bound
    ``info`` (else ``DecryptionError``); 12. the plaintext parses: response key,
    options (≤ ``max_options_bytes``, canonical), JPEG (1..``max_jpeg_bytes``), and only
    zero bytes after it.
    """
    key_list = [keys] if isinstance(keys, EnclaveKeyPair) else list(keys)
    if not key_list:
        raise ValueError("open_request needs at least one key")
    parsed = parse_request(data, limits)
    header = parsed.header
    key = next((k for k in key_list if k.key_id == header.key_id), None)
    if key is None:
        raise UnknownKeyError(header.key_id.hex, key_list[0].key_id.hex)
    if key.suite != header.suite:
        raise WrongSuiteError(
            f"key {header.key_id} is bound to {key.suite.name}, not {header.suite.name}"
        )
    suite = header.suite
    try:
        plaintext = suite._hpke().decrypt(
            parsed.enc + parsed.ciphertext, key._hpke_key(), info=request_info(parsed.header_bytes)
        )
    except (InvalidTag, ValueError):
        raise DecryptionError("the request could not be decrypted") from None
    response_key, options, jpeg = _parse_request_plaintext(suite, plaintext, limits)
    return OpenedRequest(
        key_id=header.key_id,
        suite=suite,
        jpeg=jpeg,
        options=options,
        request_digest=hashlib.sha256(bytes(data)).digest(),
        response_key=response_key,
    )


def _parse_request_plaintext(
    suite: HpkeSuite, plaintext: bytes, limits: Limits
) -> tuple[bytes, RequestOptions, bytes]:
    nk = suite.aead_key_size
    if len(plaintext) < nk + 2:
        raise MalformedError("truncated request plaintext (response key)")
    response_key = plaintext[:nk]
    offset = nk
    options_len = read_u16(plaintext, offset)
    offset += 2
    if options_len > limits.max_options_bytes:
        raise OversizedError(f"options of {options_len} bytes exceed {limits.max_options_bytes}")
    if len(plaintext) < offset + options_len + 4:
        raise MalformedError("truncated request plaintext (options)")
    options = RequestOptions.from_bytes(plaintext[offset : offset + options_len])
    offset += options_len
    jpeg_len = read_u32(plaintext, offset)
    offset += 4
    if jpeg_len == 0:
        raise MalformedError("empty JPEG")
    if jpeg_len > limits.max_jpeg_bytes:
        raise OversizedError(f"JPEG of {jpeg_len} bytes exceeds {limits.max_jpeg_bytes}")
    if len(plaintext) < offset + jpeg_len:
        raise MalformedError("truncated request plaintext (JPEG)")
    jpeg = plaintext[offset : offset + jpeg_len]
    if plaintext[offset + jpeg_len :].strip(b"\x00"):
        raise MalformedError("non-zero padding after the JPEG")
    return response_key, options, jpeg


def seal_response(
    request: OpenedRequest,
    response: InferenceResponse,
    *,
    padding_block: int = DEFAULT_RESPONSE_PADDING,
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """Seal the answer to ``request`` under its response key (fresh random nonce).

    The response's ``request_id`` is set to the request's; its ``sizes`` are dropped
    unless the request's options asked for them (protocol.md 6.3.1). The body is padded
    with zeros to a multiple of ``padding_block`` (capped by ``limits.max_response_bytes``).
    """
    return seal_response_with_nonce(
        request, response, os.urandom(NONCE_SIZE), padding_block=padding_block, limits=limits
    )


def seal_response_with_nonce(
    request: OpenedRequest,
    response: InferenceResponse,
    nonce: bytes,
    *,
    padding_block: int = DEFAULT_RESPONSE_PADDING,
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """:func:`seal_response` with a caller-chosen nonce (test vectors only: a nonce must
    never repeat under one response key)."""
    block = _padding_block(padding_block)
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"a nonce is {NONCE_SIZE} bytes")
    response = replace(response, request_id=request.options.request_id)
    if isinstance(response, InferenceResult) and not request.options.sizes:
        response = replace(response, sizes=None)
    body = encode_response_body(response)
    overhead = RESPONSE_HEADER_SIZE + 4 + TAG_SIZE
    unpadded = 4 + len(body)
    if overhead + unpadded > limits.max_response_bytes:
        raise OversizedError("the response would exceed the maximum response size")
    padded = _padded_length(unpadded, block, limits.max_response_bytes - overhead)
    plaintext = u32(len(body)) + body + b"\x00" * (padded - unpadded)
    header = response_header_bytes(request.suite, nonce)
    ciphertext = AESGCM(request.response_key).encrypt(
        nonce, plaintext, response_aad(header, request.request_digest)
    )
    return header + u32(len(ciphertext)) + ciphertext


def open_response(
    request: SealedRequest, data: bytes, *, limits: Limits = DEFAULT_LIMITS
) -> InferenceResponse:
    """Open the enclave's answer to ``request``.

    Checklist (protocol.md 5.2 and 6.3): 1-6. the framing checks of ``parse_response``
    (size first); 7. the AEAD id is the request suite's (unknown: unsupported suite;
    another: wrong suite); 8. AEAD open under the response key with the bound associated
    data (else ``DecryptionError``); 9. ``body_len`` fits and only zero bytes follow the
    body; 10. the body is a canonical, schema-valid response; 11. its ``request_id`` is
    the request's; 12. a success carries ``sizes`` if and only if the request's options
    asked for them (6.3.1).
    """
    parsed = parse_response(data, limits)
    suite = request.suite
    if parsed.aead_id != int(suite.aead):
        if parsed.aead_id not in {int(a) for a in AeadId}:
            raise UnsupportedSuiteError(int(suite.kem), int(suite.kdf), parsed.aead_id)
        raise WrongSuiteError(
            f"response AEAD 0x{parsed.aead_id:04x} is not the request's 0x{int(suite.aead):04x}"
        )
    try:
        plaintext = AESGCM(request.response_key).decrypt(
            parsed.nonce,
            parsed.ciphertext,
            response_aad(parsed.header_bytes, request.request_digest),
        )
    except (InvalidTag, ValueError):
        raise DecryptionError("the response could not be decrypted") from None
    if len(plaintext) < 4:
        raise MalformedError("truncated response plaintext")
    body_len = read_u32(plaintext, 0)
    if len(plaintext) < 4 + body_len:
        raise MalformedError("truncated response body")
    if plaintext[4 + body_len :].strip(b"\x00"):
        raise MalformedError("non-zero padding after the response body")
    response = decode_response_body(plaintext[4 : 4 + body_len])
    if response.request_id != request.options.request_id:
        raise MalformedError("the response's request_id is not the request's")
    if isinstance(response, InferenceResult):
        if response.sizes is not None and not request.options.sizes:
            raise MalformedError("the response carries sizes the request did not ask for")
        if response.sizes is None and request.options.sizes:
            raise MalformedError("the response lacks the sizes the request asked for")
    return response
