"""The enclave's HPKE key pair, its public key forms (raw, JWK) and its key id.

Specification: docs/protocol.md, section 3.

* A key pair is bound to exactly one suite (``HPKE-3`` or ``HPKE-9``); envelopes
  addressed to it must name that suite.
* Serialized keys are the RFC 9180 / draft-ietf-hpke-pq ``SerializePublicKey`` and
  ``SerializePrivateKey`` forms: for X25519 the 32-byte RFC 7748 strings; for
  MLKEM768-X25519 (X-Wing) the 1216-byte public key ``pk_M || pk_X`` and the 32-byte seed,
  expanded with SHAKE256 into the ML-KEM-768 seed ``d || z`` and the X25519 scalar.
* The key id is the first 16 bytes of
  ``SHA-256("pmc2-sealed-v1 key-id" || 0x00 || kem_id || kdf_id || aead_id || pk)``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from sealed._errors import MalformedError, UnsupportedSuiteError
from sealed._suites import DEFAULT_SUITE, SUPPORTED_SUITES, HpkeSuite, KemId

__all__ = [
    "KEY_ID_SIZE",
    "EnclaveKeyPair",
    "EnclavePublicKey",
    "InsecureKeyExportWarning",
    "KeyId",
]

KEY_ID_SIZE = 16
_KEY_ID_LABEL = b"pmc2-sealed-v1 key-id\x00"
_MLKEM768_PK_SIZE = 1184
_HEX_KEY_ID = re.compile(r"[0-9a-f]{32}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

HpkePublicKey: TypeAlias = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
HpkePrivateKey: TypeAlias = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey


class InsecureKeyExportWarning(UserWarning):
    """Emitted whenever a private key leaves its ``EnclaveKeyPair`` (tests and vectors only)."""


@dataclass(frozen=True)
class KeyId:
    """A 16-byte key identifier; its text form is 32 lowercase hexadecimal digits."""

    value: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.value, bytes) or len(self.value) != KEY_ID_SIZE:
            raise MalformedError(f"a key id is {KEY_ID_SIZE} bytes")

    @classmethod
    def from_hex(cls, text: str) -> KeyId:
        """Parse the 32-digit lowercase hexadecimal form."""
        if not isinstance(text, str) or _HEX_KEY_ID.fullmatch(text) is None:
            raise MalformedError("a key id is 32 lowercase hexadecimal digits")
        return cls(bytes.fromhex(text))

    @property
    def hex(self) -> str:
        return self.value.hex()

    def __str__(self) -> str:
        return self.value.hex()

    def __repr__(self) -> str:
        return f"KeyId({self.value.hex()!r})"


def compute_key_id(suite: HpkeSuite, public_key: bytes) -> KeyId:
    """The key id of ``public_key`` (serialized) under ``suite`` (protocol.md 3.3)."""
    kem, kdf, aead = suite.ids
    material = (
        _KEY_ID_LABEL
        + kem.to_bytes(2, "big")
        + kdf.to_bytes(2, "big")
        + aead.to_bytes(2, "big")
        + public_key
    )
    return KeyId(hashlib.sha256(material).digest()[:KEY_ID_SIZE])


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: object, member: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 section 2): alphabet, no padding, canonical."""
    if not isinstance(text, str) or _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise MalformedError(f"JWK member {member!r} is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedError(f"JWK member {member!r} is not unpadded base64url") from None
    if _b64url_encode(data) != text:
        raise MalformedError(f"JWK member {member!r} is not canonical base64url")
    return data


def _load_public(suite: HpkeSuite, raw: bytes) -> HpkePublicKey:
    try:
        if suite.kem is KemId.DHKEM_X25519_HKDF_SHA256:
            return x25519.X25519PublicKey.from_public_bytes(raw)
        pk_m = mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM768_PK_SIZE])
        pk_x = x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM768_PK_SIZE:])
        return hpke.MLKEM768X25519PublicKey(pk_m, pk_x)
    except ValueError:
        raise MalformedError(f"not a valid {suite.name} public key") from None


@dataclass(frozen=True)
class EnclavePublicKey:
    """The enclave's public key: its suite and the serialized key ``raw`` (Npk bytes).

    The attestation token carries it (``cnf.jwk``, see :meth:`to_jwk`) together with its
    :attr:`key_id`; a client seals requests to it with ``seal_request``.
    """

    suite: HpkeSuite
    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != self.suite.public_key_size:
            raise MalformedError(
                f"a {self.suite.name} public key is {self.suite.public_key_size} bytes"
            )
        _load_public(self.suite, self.raw)

    @classmethod
    def from_bytes(cls, suite: HpkeSuite, raw: bytes) -> EnclavePublicKey:
        return cls(suite, bytes(raw))

    @functools.cached_property
    def key_id(self) -> KeyId:
        return compute_key_id(self.suite, self.raw)

    @functools.cached_property
    def _hpke_public(self) -> HpkePublicKey:
        return _load_public(self.suite, self.raw)

    def _hpke_key(self) -> HpkePublicKey:
        return self._hpke_public

    def to_jwk(self) -> dict[str, str]:
        """The public JWK (protocol.md 3.4).

        ``HPKE-3``: ``{"kty": "OKP", "crv": "X25519", "x": ..., "alg": "HPKE-3", "kid": ...}``
        (RFC 8037 with the JOSE-HPKE algorithm name); ``HPKE-9``:
        ``{"kty": "AKP", "alg": "HPKE-9", "pub": ..., "kid": ...}`` (the AKP key type with
        the draft-ietf-jose-hpke-pq-pqt algorithm name). ``kid`` is the hex key id.
        """
        if self.suite.kem is KemId.DHKEM_X25519_HKDF_SHA256:
            return {
                "kty": "OKP",
                "crv": "X25519",
                "x": _b64url_encode(self.raw),
                "alg": self.suite.name,
                "kid": self.key_id.hex,
            }
        return {
            "kty": "AKP",
            "alg": self.suite.name,
            "pub": _b64url_encode(self.raw),
            "kid": self.key_id.hex,
        }

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, object]) -> EnclavePublicKey:
        """Parse a public JWK strictly.

        Checklist (protocol.md 3.4): 1. ``kty`` is ``OKP`` (then ``crv`` must be
        ``X25519``, ``x`` the key, ``alg`` absent or ``HPKE-3``) or ``AKP`` (then ``alg``
        must be ``HPKE-9`` and ``pub`` the key); 2. the key is unpadded canonical base64url
        of exactly Npk bytes and loads; 3. no private member (``d``, ``priv``) is present;
        4. ``kid``, when present, equals the computed key id. Other members are ignored.
        """
        if not isinstance(jwk, Mapping):
            raise MalformedError("a JWK is a JSON object")
        if "d" in jwk or "priv" in jwk:
            raise MalformedError("a public JWK must not carry private key material")
        kty = jwk.get("kty")
        suite: HpkeSuite | None
        if kty == "OKP":
            if jwk.get("crv") != "X25519":
                raise MalformedError("an OKP enclave key must have crv X25519")
            suite = _suite_named(jwk.get("alg", "HPKE-3"))
            if suite is None or suite.kem is not KemId.DHKEM_X25519_HKDF_SHA256:
                raise MalformedError("an X25519 enclave key must have alg HPKE-3")
            raw = _b64url_decode(jwk.get("x"), "x")
        elif kty == "AKP":
            suite = _suite_named(jwk.get("alg"))
            if suite is None or suite.kem is not KemId.MLKEM768_X25519:
                raise MalformedError("an AKP enclave key must have alg HPKE-9")
            raw = _b64url_decode(jwk.get("pub"), "pub")
        else:
            raise MalformedError("an enclave JWK has kty OKP or AKP")
        key = cls(suite, raw)
        kid = jwk.get("kid")
        if kid is not None and kid != key.key_id.hex:
            raise MalformedError("the JWK's kid is not the key id of its key")
        return key


def _suite_named(name: object) -> HpkeSuite | None:
    for suite in SUPPORTED_SUITES:
        if suite.name == name:
            return suite
    return None


class EnclaveKeyPair:
    """The enclave's HPKE key pair, bound to one suite.

    Generate one at boot with :meth:`generate`; the private key never needs to leave the
    object (``open_request`` uses it). :meth:`from_private_bytes` rebuilds a pair from its
    serialized private key (fixed test keys, vectors); :meth:`export_private_bytes_insecure`
    is the only way out and warns.
    """

    __slots__ = ("_hpke_private", "_private", "_public", "_suite")

    def __init__(self, suite: HpkeSuite, private_bytes: bytes) -> None:
        if suite not in SUPPORTED_SUITES:
            raise UnsupportedSuiteError(*suite.ids)
        if not isinstance(private_bytes, bytes) or len(private_bytes) != suite.private_key_size:
            raise MalformedError(f"a {suite.name} private key is {suite.private_key_size} bytes")
        self._suite = suite
        self._private = private_bytes
        self._public = EnclavePublicKey(suite, _public_bytes(suite, private_bytes))
        self._hpke_private = _load_private(suite, private_bytes)

    @classmethod
    def generate(cls, suite: HpkeSuite = DEFAULT_SUITE) -> EnclaveKeyPair:
        """A fresh key pair from the operating system's CSPRNG."""
        return cls(suite, os.urandom(suite.private_key_size))

    @classmethod
    def from_private_bytes(cls, suite: HpkeSuite, data: bytes) -> EnclaveKeyPair:
        """Rebuild a pair from its serialized private key (X25519 scalar or X-Wing seed)."""
        return cls(suite, bytes(data))

    @property
    def suite(self) -> HpkeSuite:
        return self._suite

    @property
    def public_key(self) -> EnclavePublicKey:
        return self._public

    @property
    def key_id(self) -> KeyId:
        return self._public.key_id

    def export_private_bytes_insecure(self) -> bytes:
        """The serialized private key. For tests and test vectors only; warns."""
        warnings.warn(
            "exporting an enclave private key (tests and vectors only)",
            InsecureKeyExportWarning,
            stacklevel=2,
        )
        return self._private

    def _hpke_key(self) -> HpkePrivateKey:
        return self._hpke_private

    def __repr__(self) -> str:
        return f"EnclaveKeyPair(suite={self._suite.name}, key_id={self.key_id})"


def _xwing_expand(seed: bytes) -> tuple[bytes, bytes]:
    """X-Wing key expansion: SHAKE256(seed, 96) = ML-KEM-768 seed (d || z) || X25519 scalar."""
    expanded = hashlib.shake_256(seed).digest(96)
    return expanded[:64], expanded[64:]


def _load_private(suite: HpkeSuite, private: bytes) -> HpkePrivateKey:
    if suite.kem is KemId.DHKEM_X25519_HKDF_SHA256:
        return x25519.X25519PrivateKey.from_private_bytes(private)
    mlkem_seed, x25519_scalar = _xwing_expand(private)
    return hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed),
        x25519.X25519PrivateKey.from_private_bytes(x25519_scalar),
    )


def _public_bytes(suite: HpkeSuite, private: bytes) -> bytes:
    if suite.kem is KemId.DHKEM_X25519_HKDF_SHA256:
        return x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    mlkem_seed, x25519_scalar = _xwing_expand(private)
    pk_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed).public_key().public_bytes_raw()
    pk_x = x25519.X25519PrivateKey.from_private_bytes(x25519_scalar).public_key()
    return pk_m + pk_x.public_bytes_raw()
