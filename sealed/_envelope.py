"""Envelope framing: limits, the fixed headers, and strict parsing before any crypto.

Specification: docs/protocol.md, sections 4 (request envelope) and 5 (response envelope).
All integers are unsigned big-endian. Parsing only checks the framing; it never touches
key material, so the gateway can use :func:`peek_request_header` to route by key id.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sealed._errors import MalformedError, OversizedError, UnsupportedVersionError
from sealed._keys import KeyId
from sealed._suites import HpkeSuite

__all__ = [
    "DEFAULT_LIMITS",
    "MAGIC",
    "NONCE_SIZE",
    "REQUEST_HEADER_SIZE",
    "RESPONSE_HEADER_SIZE",
    "TAG_SIZE",
    "TYPE_REQUEST",
    "TYPE_RESPONSE",
    "VERSION",
    "Limits",
    "ParsedRequest",
    "ParsedResponse",
    "RequestHeader",
    "parse_request",
    "parse_response",
    "peek_request_header",
    "read_u16",
    "read_u32",
    "request_header_bytes",
    "response_header_bytes",
    "u16",
    "u32",
]

MAGIC = b"PMC2"
VERSION = 1
TYPE_REQUEST = 0x01
TYPE_RESPONSE = 0x02
NONCE_SIZE = 12
TAG_SIZE = 16

# magic(4) version(1) type(1) kem(2) kdf(2) aead(2) key_id(16)
_REQUEST_HEADER = struct.Struct(">4sBBHHH16s")
REQUEST_HEADER_SIZE = _REQUEST_HEADER.size  # 28
# magic(4) version(1) type(1) aead(2) nonce(12)
_RESPONSE_HEADER = struct.Struct(">4sBBH12s")
RESPONSE_HEADER_SIZE = _RESPONSE_HEADER.size  # 20
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Size limits, enforced by both sides (protocol.md 7).

    ``max_envelope_bytes``: a request envelope, checked before anything else;
    ``max_jpeg_bytes``: the JPEG inside it; ``max_options_bytes``: the options JSON;
    ``max_response_bytes``: a response envelope (and therefore its body).
    """

    max_envelope_bytes: int = 4 * MIB + 64 * 1024
    max_jpeg_bytes: int = 4 * MIB
    max_options_bytes: int = 1024
    max_response_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("max_envelope_bytes", self.max_envelope_bytes, 1024, 2**32 - 1),
            ("max_jpeg_bytes", self.max_jpeg_bytes, 1, 2**32 - 1),
            ("max_options_bytes", self.max_options_bytes, 16, 2**16 - 1),
            ("max_response_bytes", self.max_response_bytes, 1024, 2**32 - 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"Limits.{name} must be an integer in {low}..{high}")


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class RequestHeader:
    """The clear-text header of a request envelope: what the gateway may read."""

    version: int
    suite: HpkeSuite
    key_id: KeyId


def request_header_bytes(suite: HpkeSuite, key_id: KeyId) -> bytes:
    """The 28 header bytes of a version-1 request envelope (protocol.md 4.1)."""
    kem, kdf, aead = suite.ids
    return _REQUEST_HEADER.pack(MAGIC, VERSION, TYPE_REQUEST, kem, kdf, aead, key_id.value)


def response_header_bytes(suite: HpkeSuite, nonce: bytes) -> bytes:
    """The 20 header bytes of a version-1 response envelope (protocol.md 5.1)."""
    return _RESPONSE_HEADER.pack(MAGIC, VERSION, TYPE_RESPONSE, int(suite.aead), nonce)


def _preamble(data: bytes, expected_type: int, what: str) -> None:
    """Checks shared by both envelope types: magic, version, type (protocol.md 4.2/5.2)."""
    if len(data) < 6:
        raise MalformedError(f"truncated {what} envelope")
    if data[:4] != MAGIC:
        raise MalformedError(f"not a PMC2 sealed envelope (bad magic) for a {what}")
    if data[4] != VERSION:
        raise UnsupportedVersionError(data[4])
    if data[5] != expected_type:
        raise MalformedError(f"envelope type 0x{data[5]:02x} is not a {what}")


@dataclass(frozen=True)
class ParsedRequest:
    header: RequestHeader
    header_bytes: bytes
    enc: bytes
    ciphertext: bytes


def parse_request(data: bytes, limits: Limits) -> ParsedRequest:
    """Frame a request envelope; no cryptography.

    Checklist (protocol.md 4.2): 1. size ≤ ``max_envelope_bytes`` (else oversized);
    2. at least 6 bytes, magic ``PMC2``; 3. version 1 (else unsupported version);
    4. type 0x01; 5. at least 30 bytes (header and ``enc_len``); 6. a supported suite
    (else unsupported suite); 7. ``enc_len`` = Nenc of the suite; 8. ``ct_len`` ≥ 16 and
    exactly the remaining bytes (fewer: truncated; more: trailing bytes).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedError("an envelope is a byte string")
    data = bytes(data)
    if len(data) > limits.max_envelope_bytes:
        raise OversizedError(
            f"request envelope of {len(data)} bytes exceeds {limits.max_envelope_bytes}"
        )
    _preamble(data, TYPE_REQUEST, "request")
    if len(data) < REQUEST_HEADER_SIZE + 2:
        raise MalformedError("truncated request header")
    _, version, _, kem, kdf, aead, key_id = _REQUEST_HEADER.unpack_from(data)
    suite = HpkeSuite.from_ids(kem, kdf, aead)
    header = RequestHeader(version, suite, KeyId(key_id))
    offset = REQUEST_HEADER_SIZE
    (enc_len,) = _U16.unpack_from(data, offset)
    offset += 2
    if enc_len != suite.enc_size:
        raise MalformedError(f"enc_len {enc_len} is not {suite.enc_size} for {suite.name}")
    if len(data) < offset + enc_len + 4:
        raise MalformedError("truncated request envelope (encapsulated key)")
    enc = data[offset : offset + enc_len]
    offset += enc_len
    (ct_len,) = _U32.unpack_from(data, offset)
    offset += 4
    if ct_len < TAG_SIZE:
        raise MalformedError("ciphertext shorter than the AEAD tag")
    remaining = len(data) - offset
    if remaining < ct_len:
        raise MalformedError("truncated request envelope (ciphertext)")
    if remaining > ct_len:
        raise MalformedError("trailing bytes after the request ciphertext")
    return ParsedRequest(header, data[:REQUEST_HEADER_SIZE], enc, data[offset:])


def peek_request_header(data: bytes, limits: Limits = DEFAULT_LIMITS) -> RequestHeader:
    """Validate a request envelope's framing and return its clear-text header.

    For the gateway: it learns the version, suite and key id (to route to a replica
    holding that key) and enforces the size limit, without any key. Raises the same
    framing errors as ``open_request``.
    """
    return parse_request(data, limits).header


@dataclass(frozen=True)
class ParsedResponse:
    aead_id: int
    nonce: bytes
    header_bytes: bytes
    ciphertext: bytes


def parse_response(data: bytes, limits: Limits) -> ParsedResponse:
    """Frame a response envelope; no cryptography.

    Checklist (protocol.md 5.2): 1. size ≤ ``max_response_bytes``; 2. at least 6 bytes,
    magic; 3. version 1; 4. type 0x02; 5. at least 24 bytes (header and ``ct_len``);
    6. ``ct_len`` ≥ 16 and exactly the remaining bytes. (The AEAD id is checked against
    the request by the caller.)
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedError("an envelope is a byte string")
    data = bytes(data)
    if len(data) > limits.max_response_bytes:
        raise OversizedError(
            f"response envelope of {len(data)} bytes exceeds {limits.max_response_bytes}"
        )
    _preamble(data, TYPE_RESPONSE, "response")
    if len(data) < RESPONSE_HEADER_SIZE + 4:
        raise MalformedError("truncated response header")
    _, _, _, aead, nonce = _RESPONSE_HEADER.unpack_from(data)
    (ct_len,) = _U32.unpack_from(data, RESPONSE_HEADER_SIZE)
    offset = RESPONSE_HEADER_SIZE + 4
    if ct_len < TAG_SIZE:
        raise MalformedError("ciphertext shorter than the AEAD tag")
    remaining = len(data) - offset
    if remaining < ct_len:
        raise MalformedError("truncated response envelope (ciphertext)")
    if remaining > ct_len:
        raise MalformedError("trailing bytes after the response ciphertext")
    return ParsedResponse(aead, nonce, data[:RESPONSE_HEADER_SIZE], data[offset:])


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def read_u16(data: bytes, offset: int) -> int:
    return int(_U16.unpack_from(data, offset)[0])


def read_u32(data: bytes, offset: int) -> int:
    return int(_U32.unpack_from(data, offset)[0])
