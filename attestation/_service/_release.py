"""Released secrets: a JWE (compact) for the enclave key named in an attestation token.

Format: JWE compact serialization (RFC 7516), ``alg`` ECDH-ES (direct key agreement,
RFC 7518 section 4.6) with the enclave's X25519 key (OKP, RFC 8037) and ``enc`` A256GCM;
protected header ``{"alg", "enc", "epk", "kid": <enclave key id hex>, "cty":
"application/octet-stream", "pmc2-resource": <name>, "pmc2-version": <n>}``; the
plaintext is the secret's bytes. Only X25519 (suite HPKE-3) enclave keys can receive
secrets; the same X25519 key serves HPKE (sealed requests) and ECDH-ES here, with
different key derivations (HPKE's labeled HKDF, JOSE's Concat KDF bound to ``enc``).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import x25519
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from joserfc.registry import HeaderParameter

from attestation._errors import MalformedError
from attestation._service._binding import b64url_encode
from attestation._service._errors import TokenError
from sealed import EnclaveKeyPair, EnclavePublicKey, KemId

__all__ = ["JWE_ALG", "JWE_ENC", "open_released_secret", "seal_secret", "supports_release"]

JWE_ALG = "ECDH-ES"
JWE_ENC = "A256GCM"
JWE_REGISTRY = jwe.JWERegistry(
    header_registry={
        "pmc2-resource": HeaderParameter("PMC2 resource name", "str"),
        "pmc2-version": HeaderParameter("PMC2 resource version", "int"),
    },
    algorithms=[JWE_ALG, JWE_ENC],
)


def supports_release(public_key: EnclavePublicKey) -> bool:
    """Whether secrets can be released to this key (X25519, suite HPKE-3)."""
    return public_key.suite.kem is KemId.DHKEM_X25519_HKDF_SHA256


def seal_secret(secret: bytes, public_key: EnclavePublicKey, name: str, version: int) -> str:
    """The compact JWE of ``secret`` for ``public_key`` (see the module docstring)."""
    if not supports_release(public_key):
        raise MalformedError("released secrets need an X25519 (HPKE-3) enclave key")
    recipient = OKPKey.import_key(
        {"kty": "OKP", "crv": "X25519", "x": b64url_encode(public_key.raw)}
    )
    header = {
        "alg": JWE_ALG,
        "enc": JWE_ENC,
        "kid": public_key.key_id.hex,
        "cty": "application/octet-stream",
        "pmc2-resource": name,
        "pmc2-version": version,
    }
    return jwe.encrypt_compact(header, secret, recipient, registry=JWE_REGISTRY)


def open_released_secret(
    compact: str, key_pair: EnclaveKeyPair, *, expected_resource: str | None = None
) -> bytes:
    """Decrypt a released secret with the enclave's key pair.

    Checks: the JWE decrypts (ECDH-ES + A256GCM only) with our key, names our key id,
    and, when given, the expected resource. Raises :class:`TokenError` otherwise.
    """
    private = key_pair._hpke_key()
    if not isinstance(private, x25519.X25519PrivateKey):
        raise MalformedError("released secrets need an X25519 (HPKE-3) enclave key")
    key = OKPKey.import_key(private)
    try:
        opened = jwe.decrypt_compact(compact, key, registry=JWE_REGISTRY)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise TokenError(f"the released secret does not decrypt with our key: {exc}") from None
    header = opened.protected
    if header.get("kid") != key_pair.key_id.hex:
        raise TokenError("the released secret names another enclave key")
    if expected_resource is not None and header.get("pmc2-resource") != expected_resource:
        raise TokenError("the released secret is for another resource")
    plaintext = opened.plaintext
    if plaintext is None:
        raise TokenError("the released secret is empty")
    return plaintext
