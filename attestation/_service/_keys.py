"""Key material of the attestation service: token-signing keys and the master key.

Token-signing keys (ES384, P-384): the current key signs every attestation-result
token; :meth:`SigningKeys.rotate` makes a new key current and *retires* the old one,
which stays in the JWKS (and keeps verifying) for :data:`MAX_TOKEN_LIFETIME` seconds
after its retirement, the longest lifetime any token it signed can have. After that its
private key file is deleted. Keys are rotated automatically when the current one is
older than the configured rotation period. The key id (``kid``) is the RFC 7638 JWK
thumbprint (SHA-256) of the public key.

Master key: 32 random bytes in ``keys/master.key`` (0600), created on first start; it
encrypts resources at rest with AES-256-GCM, a fresh 96-bit nonce per version and the
resource's name and version as associated data, so a ciphertext cannot be moved to
another name or version.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import ECKey, KeySet

from attestation._errors import MalformedError
from attestation._service._store import Store, read_private, write_private

__all__ = ["MAX_TOKEN_LIFETIME", "MasterKey", "SigningKeys"]

MAX_TOKEN_LIFETIME = 86400
"""Upper bound of any token's lifetime (the appraisal policy allows 60 .. 86400 s)."""
JWS_ALG = "ES384"
_MASTER_KEY_SIZE = 32
_AAD_LABEL = b"pmc2-resource-v1\x00"


class MasterKey:
    """AES-256-GCM for resources at rest (see the module docstring)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != _MASTER_KEY_SIZE:
            raise MalformedError("the master key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def load_or_create(cls, path: Path) -> MasterKey:
        if not path.exists():
            write_private(path, os.urandom(_MASTER_KEY_SIZE))
        data = read_private(path)
        if len(data) != _MASTER_KEY_SIZE:
            raise MalformedError(f"{path} must hold exactly {_MASTER_KEY_SIZE} bytes")
        return cls(data)

    @staticmethod
    def _aad(name: str, version: int) -> bytes:
        return _AAD_LABEL + name.encode() + b"\x00" + version.to_bytes(8, "big")

    def encrypt(self, name: str, version: int, nonce: bytes, plaintext: bytes) -> bytes:
        return self._aead.encrypt(nonce, plaintext, self._aad(name, version))

    def decrypt(self, name: str, version: int, nonce: bytes, ciphertext: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce, ciphertext, self._aad(name, version))
        except InvalidTag:
            raise MalformedError(
                f"resource {name!r} version {version} does not decrypt under the master key"
            ) from None


def _public_jwk(key: ECKey) -> dict[str, Any]:
    jwk = dict(key.as_dict(private=False))
    jwk["kid"] = key.thumbprint()
    jwk["alg"] = JWS_ALG
    jwk["use"] = "sig"
    return jwk


class SigningKeys:
    """The current and retired token-signing keys of a store (thread-safe)."""

    def __init__(
        self,
        store: Store,
        *,
        rotation_period: float | None,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._rotation = rotation_period
        self._clock = clock
        self._cache: dict[str, ECKey] = {}
        self._lock = threading.Lock()

    def _path(self, kid: str) -> Path:
        return self._store.keys_dir / f"token-{kid}.pem"

    def _load(self, kid: str) -> ECKey:
        key = self._cache.get(kid)
        if key is None:
            pem = read_private(self._path(kid))
            private = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(
                private.curve, ec.SECP384R1
            ):
                raise MalformedError(f"{self._path(kid)} is not a P-384 private key")
            key = ECKey.import_key(private)
            if key.thumbprint() != kid:
                raise MalformedError(f"{self._path(kid)} does not hold key {kid}")
            self._cache[kid] = key
        return key

    def rotate(self) -> str:
        """Generate a new current key (the previous one is retired); its kid."""
        with self._lock:
            return self._rotate_locked(self._clock())

    def _rotate_locked(self, now: float) -> str:
        private = ec.generate_private_key(ec.SECP384R1())
        key = ECKey.import_key(private)
        kid = key.thumbprint()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(self._path(kid), pem)
        self._store.add_signing_key(kid, now)
        self._cache[kid] = key
        return kid

    def current(self) -> tuple[str, ECKey]:
        """The key that signs now (created, or rotated when due)."""
        now = self._clock()
        keys = self._store.signing_keys()
        current = next((k for k in keys if k[2] is None), None)
        due = current is None or (self._rotation is not None and now - current[1] >= self._rotation)
        if due:
            with self._lock:
                keys = self._store.signing_keys()
                current = next((k for k in keys if k[2] is None), None)
                if current is None or (
                    self._rotation is not None and now - current[1] >= self._rotation
                ):
                    kid = self._rotate_locked(now)
                    return kid, self._load(kid)
        assert current is not None
        return current[0], self._load(current[0])

    def verification_keys(self) -> list[tuple[str, ECKey]]:
        """Current key and retired keys still inside their grace period (pruning others)."""
        now = self._clock()
        out: list[tuple[str, ECKey]] = []
        for kid, _created, retired in self._store.signing_keys():
            if retired is not None and retired + MAX_TOKEN_LIFETIME <= now:
                self._prune(kid)
                continue
            try:
                out.append((kid, self._load(kid)))
            except (OSError, MalformedError):
                continue
        return out

    def _prune(self, kid: str) -> None:
        with self._lock:
            self._cache.pop(kid, None)
            self._store.drop_signing_key(kid)
            with contextlib.suppress(FileNotFoundError):
                self._path(kid).unlink()

    def key_set(self) -> KeySet:
        return KeySet([key for _kid, key in self.verification_keys()])

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (RFC 7517 section 5)."""
        return {"keys": [_public_jwk(key) for _kid, key in self.verification_keys()]}
