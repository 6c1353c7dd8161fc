"""Configuration of the attestation service (``create_app(ServiceConfig(...))``)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from attestation._certs import TrustedRoots
from attestation._errors import MalformedError
from attestation._kds import KdsClient

__all__ = ["InsecureRootsWarning", "ServiceConfig", "load_operator_public_key"]


class InsecureRootsWarning(UserWarning):
    """The service trusts roots other than AMD's (e.g. the simulated platform's)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def load_operator_public_key(data: bytes | str | Path) -> ed25519.Ed25519PublicKey:
    """An operator's Ed25519 public key from PEM (SubjectPublicKeyInfo) or an OKP JWK.

    ``data`` is the key's bytes/text, or a path to a file holding it.
    """
    if isinstance(data, Path):
        try:
            data = data.read_bytes()
        except OSError as exc:
            raise MalformedError(f"cannot read operator key: {exc.strerror}") from None
    raw = data.encode() if isinstance(data, str) else data
    text = raw.strip()
    if text.startswith(b"{"):
        try:
            jwk = json.loads(text)
        except ValueError:
            raise MalformedError("operator key: not valid JSON") from None
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise MalformedError("operator key: expected an OKP Ed25519 JWK")
        if "d" in jwk:
            raise MalformedError("operator key: a public key must not carry 'd'")
        from attestation._service._binding import b64url_decode

        x = b64url_decode(jwk.get("x"), "operator key x", max_size=32)
        try:
            return ed25519.Ed25519PublicKey.from_public_bytes(x)
        except ValueError:
            raise MalformedError("operator key: not an Ed25519 public key") from None
    try:
        key = serialization.load_pem_public_key(text)
    except ValueError:
        raise MalformedError("operator key: not a PEM public key or JWK") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise MalformedError("operator key: not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the attestation service needs; only ``state_dir`` and
    ``operator_keys`` are required.

    ``insecure_roots``: trust these roots *instead of* AMD's pinned ARKs (development with
    the simulated platform: ``TrustedRoots.from_dir(platform.roots_dir)``). Tokens then
    carry ``ear.status = "warning"``; creating the app warns
    (:class:`InsecureRootsWarning`) and logs it.
    ``kds``: fetch missing VCEKs and chains from AMD's KDS (with its cache); ``None``
    requires evidence to carry its certificates.
    ``clock``: the current time (tests inject one); every check uses it.
    """

    state_dir: Path
    operator_keys: tuple[ed25519.Ed25519PublicKey, ...]
    issuer: str = "pmc2-attestation-service"
    insecure_roots: TrustedRoots | None = None
    kds: KdsClient | None = None
    clock: Callable[[], dt.datetime] = _utcnow
    nonce_lifetime: float = 300.0
    max_outstanding_nonces: int = 100_000
    max_body_bytes: int = 65536
    request_timeout: float = 30.0
    admin_token_max_lifetime: float = 300.0
    clock_skew: float = 60.0
    signing_key_rotation: float | None = 30 * 86400.0
    access_log: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        keys = tuple(self.operator_keys)
        if not keys:
            raise MalformedError("at least one operator key is required (admin is never open)")
        if not all(isinstance(k, ed25519.Ed25519PublicKey) for k in keys):
            raise MalformedError("operator keys must be Ed25519 public keys")
        object.__setattr__(self, "operator_keys", keys)
        if not 10.0 <= self.nonce_lifetime <= 3600.0:
            raise MalformedError("nonce_lifetime must be 10 .. 3600 s")
        if not 1024 <= self.max_body_bytes <= 16 * 1024 * 1024:
            raise MalformedError("max_body_bytes must be 1 KiB .. 16 MiB")
        if not 0.1 <= self.request_timeout <= 600.0:
            raise MalformedError("request_timeout must be 0.1 .. 600 s")
        if not 10.0 <= self.admin_token_max_lifetime <= 3600.0:
            raise MalformedError("admin_token_max_lifetime must be 10 .. 3600 s")
        if self.signing_key_rotation is not None and self.signing_key_rotation < 3600.0:
            raise MalformedError("signing_key_rotation must be at least 3600 s")

    @property
    def roots(self) -> TrustedRoots:
        """The roots verification uses."""
        return (
            self.insecure_roots if self.insecure_roots is not None else TrustedRoots.amd_default()
        )

    def now(self) -> dt.datetime:
        value = self.clock()
        if value.tzinfo is None:
            raise MalformedError("the service clock must return timezone-aware datetimes")
        return value
