"""Operator-signed admin requests: Ed25519 JWTs bound to one HTTP request.

Every ``/v1/admin/`` request carries ``Authorization: Bearer <JWT>`` where the JWT is
signed by an operator key configured on the service (nothing administrative is
anonymous). Header: ``{"alg": "Ed25519", "typ": "pmc2-admin+jwt", "kid": <RFC 7638
thumbprint of the operator's public JWK>}`` (``Ed25519`` is the fully-specified EdDSA
algorithm of RFC 9864). Claims::

    {"iat": ..., "exp": ...,          # lifetime at most the service's limit (300 s)
     "jti": "<unique id>",            # each id is accepted once
     "htm": "POST",                   # the request method,
     "htu": "/v1/admin/reference-values",   # path (and ?query) and
     "bh": "<base64url SHA-256 of the request body>"}   # body it authorizes

Checklist of :func:`verify_operator_request` (O1-O6):

O1. ``Authorization: Bearer`` with a token of at most 4 KiB.
O2. The header names ``alg`` Ed25519 and ``typ`` pmc2-admin+jwt.
O3. The signature verifies with a configured operator key (the one ``kid`` names).
O4. ``iat`` is not in the future (beyond the clock skew), ``exp`` is in the future and
    ``exp - iat`` is at most the lifetime limit.
O5. ``htm``, ``htu`` and ``bh`` equal this request's method, path (+ query) and body hash.
O6. ``jti`` (16 to 128 characters) was never seen (kept until ``exp``): no replay.

Every failure is ``401`` ``operator-unauthorized`` with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from attestation._errors import MalformedError
from attestation._service._binding import b64url_decode, b64url_encode
from attestation._service._problems import ProblemError

__all__ = [
    "OPERATOR_ALG",
    "OPERATOR_TYP",
    "operator_key_id",
    "operator_token",
    "verify_operator_request",
]

OPERATOR_ALG = "Ed25519"
OPERATOR_TYP = "pmc2-admin+jwt"
MAX_OPERATOR_TOKEN = 4096


def _okp_public(key: ed25519.Ed25519PublicKey) -> OKPKey:
    return OKPKey.import_key(key)


def operator_key_id(key: ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey) -> str:
    """The RFC 7638 thumbprint of an operator key's public JWK."""
    public = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey) else key
    return _okp_public(public).thumbprint()


def body_hash(body: bytes) -> str:
    return b64url_encode(hashlib.sha256(body).digest())


def operator_token(
    private_key: ed25519.Ed25519PrivateKey,
    method: str,
    target: str,
    body: bytes,
    *,
    now: datetime,
    lifetime: int = 60,
) -> str:
    """An operator JWT authorizing exactly one request (``target``: path and ?query)."""
    key = OKPKey.import_key(private_key)
    iat = int(now.timestamp())
    header = {"alg": OPERATOR_ALG, "typ": OPERATOR_TYP, "kid": operator_key_id(private_key)}
    claims = {
        "iat": iat,
        "exp": iat + lifetime,
        "jti": b64url_encode(secrets.token_bytes(18)),
        "htm": method.upper(),
        "htu": target,
        "bh": body_hash(body),
    }
    return jwt.encode(header, claims, key, algorithms=[OPERATOR_ALG])


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(
        401,
        "operator-unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="pmc2-admin"'},
    )


def _header(token: str) -> dict[str, Any]:
    head = token.split(".", 1)[0]
    try:
        value = json.loads(b64url_decode(head, "operator token header", max_size=1024))
    except (MalformedError, ValueError):
        raise _unauthorized("operator token header is not base64url JSON") from None
    if not isinstance(value, dict):
        raise _unauthorized("operator token header is not a JSON object")
    return value


def _int_claim(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _unauthorized(f"operator token claim {name} missing or not an integer")
    return value


def _str_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str):
        raise _unauthorized(f"operator token claim {name} missing or not a string")
    return value


def verify_operator_request(
    authorization: str | None,
    *,
    method: str,
    target: str,
    body: bytes,
    operator_keys: Sequence[ed25519.Ed25519PublicKey],
    now: datetime,
    max_lifetime: float,
    skew: float,
    use_jti: Any,
) -> str:
    """Run O1-O6; returns the operator's key id. ``use_jti(jti, exp) -> bool``."""
    # O1
    if not authorization:
        raise _unauthorized("admin requests must be signed by an operator key")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_OPERATOR_TOKEN:
        raise _unauthorized("expected Authorization: Bearer <operator JWT>")
    # O2: the protected header, read before any key is chosen
    header = _header(token)
    kid = header.get("kid")
    if header.get("alg") != OPERATOR_ALG or header.get("typ") != OPERATOR_TYP:
        raise _unauthorized("operator token must have alg Ed25519 and typ pmc2-admin+jwt")
    keys = {operator_key_id(k): k for k in operator_keys}
    if not isinstance(kid, str) or kid not in keys:
        raise _unauthorized("operator token is not signed by a configured operator key")
    # O3
    try:
        decoded = jwt.decode(token, _okp_public(keys[kid]), algorithms=[OPERATOR_ALG])
    except JoseError as exc:
        raise _unauthorized(f"operator token rejected: {exc.error}") from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise _unauthorized(f"operator token malformed: {type(exc).__name__}") from None
    claims = dict(decoded.claims)
    # O4
    at = now.timestamp()
    iat = _int_claim(claims, "iat")
    exp = _int_claim(claims, "exp")
    if iat > at + skew:
        raise _unauthorized("operator token issued in the future")
    if exp <= at:
        raise _unauthorized("operator token expired")
    if exp - iat > max_lifetime or exp <= iat:
        raise _unauthorized(f"operator token lifetime exceeds {max_lifetime:g} s")
    # O5
    if _str_claim(claims, "htm") != method.upper():
        raise _unauthorized("operator token was issued for another method")
    if _str_claim(claims, "htu") != target:
        raise _unauthorized("operator token was issued for another path")
    if _str_claim(claims, "bh") != body_hash(body):
        raise _unauthorized("operator token was issued for another body")
    # O6
    jti = _str_claim(claims, "jti")
    if not 16 <= len(jti) <= 128:
        raise _unauthorized("operator token jti must be 16 to 128 characters")
    if not use_jti(jti, float(exp)):
        raise _unauthorized("operator token replayed (jti already used)")
    return kid
