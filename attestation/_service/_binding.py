"""The canonical runtime data and its hash in REPORT_DATA (the nonce-and-key binding).

Definition (PMC2 attestation protocol, version 1)
==================================================

An enclave proves that an attestation report belongs to *this* attestation and to *its*
key by putting into the report's 64-byte REPORT_DATA (SEV-SNP ABI 56860, Table 23,
offset 0x50) the hash of the **canonical runtime data**, in the manner of the
Confidential Containers key broker protocol:

1. The runtime data is the JSON object ``{"nonce": N, "tee-pubkey": K}`` where ``N`` is
   the nonce in unpadded base64url (RFC 4648 section 5; for ``/v1/attest`` the 32-byte
   nonce the service issued, for ``/v1/verify`` the client's own nonce of 16 to 64
   bytes) and ``K`` is the enclave's public key as its canonical public JWK,
   ``sealed.EnclavePublicKey.to_jwk()`` (for the default suite:
   ``{"alg": "HPKE-3", "crv": "X25519", "kid": <key id hex>, "kty": "OKP", "x": ...}``).
   A JWK the enclave submits is parsed strictly (``EnclavePublicKey.from_jwk``) and
   re-serialized, so members other than these never enter the hash.
2. It is encoded canonically: RFC 8785 (JCS) for this restricted value, that is, members
   sorted by key, no whitespace, ASCII strings (``policies.canonical_json``).
3. REPORT_DATA = SHA-384(encoding) (48 bytes) followed by 16 zero bytes.

SHA-384 matches the report's own signature hash; the 16 trailing zero bytes are
checked like the rest (a report whose last 16 bytes are not zero does not bind).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from attestation._errors import MalformedError
from policies import canonical_json
from sealed import EnclavePublicKey

__all__ = [
    "NONCE_SIZE",
    "b64url_decode",
    "b64url_encode",
    "runtime_data",
    "runtime_data_hash",
]

NONCE_SIZE = 32
CLIENT_NONCE_SIZES = (16, 64)
REPORT_DATA_SIZE = 64
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: object, what: str, *, max_size: int | None = None) -> bytes:
    """Strict unpadded base64url: the alphabet only, no padding, canonical trailing bits."""
    if not isinstance(text, str):
        raise MalformedError(f"{what} must be a base64url string")
    if max_size is not None and len(text) > (max_size * 4 + 2) // 3:
        raise MalformedError(f"{what} is longer than {max_size} bytes")
    if _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise MalformedError(f"{what} is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedError(f"{what} is not unpadded base64url") from None
    if b64url_encode(data) != text:
        raise MalformedError(f"{what} is not canonical base64url")
    return data


def runtime_data(nonce: bytes, public_key: EnclavePublicKey) -> bytes:
    """The canonical encoding of ``{"nonce": ..., "tee-pubkey": ...}`` (steps 1-2)."""
    return canonical_json({"nonce": b64url_encode(nonce), "tee-pubkey": public_key.to_jwk()})


def runtime_data_hash(nonce: bytes, public_key: EnclavePublicKey) -> bytes:
    """The 64-byte REPORT_DATA binding ``nonce`` and ``public_key`` (step 3)."""
    digest = hashlib.sha384(runtime_data(nonce, public_key)).digest()
    return digest + bytes(REPORT_DATA_SIZE - len(digest))
