"""Attestation-result tokens: EAR-style claims in a JWT signed ES384, and their verification.

Claims of a token (EAT Attestation Results, draft-ietf-rats-ear, JWT serialization;
``pmc2.*`` members are PMC2 extensions)::

    {
      "iss": "<service issuer>",
      "iat": 1700000000, "exp": 1700003600,          # lifetime from the appraisal policy
      "jti": "<random id>",
      "eat_profile": "tag:github.com,2023:veraison/ear",
      "eat_nonce": "<nonce, base64url>",
      "ear.verifier-id": {"developer": "pmc2", "build": "pmc2 <version>"},
      "cnf": {"jwk": <the enclave's public JWK (sealed.EnclavePublicKey.to_jwk())>},
      "pmc2.key_id": "<enclave key id, 32 hex digits>",
      "pmc2.nonce_source": "service" | "client",   # /v1/attest | /v1/verify
      "submods": {
        "sev-snp": {
          "ear.status": "affirming" | "warning",
          "ear.trustworthiness-vector": {"instance-identity": 2, "configuration": 2,
                                         "executables": 3, "hardware": 2 | 32,
                                         "runtime-opaque": 2},
          "ear.appraisal-policy-id": "urn:pmc2:appraisal:sha384:<hex>",
          "pmc2.measurement": "<48 bytes hex>",
          "pmc2.host_data": "<32 bytes hex>",     # = the launch-configuration digest
          "pmc2.reported_tcb": {"bootloader": 4, "tee": 0, "snp": 22, "microcode": 213},
          "pmc2.product": "Milan", "pmc2.signing_key": "vcek",
          "pmc2.report_version": 3, "pmc2.guest_svn": 0, "pmc2.vmpl": 0,
          "pmc2.policy_digests": {"appraisal": "<hex>", "key_release": "<hex>"},
          "pmc2.reference_value": {"id": 1, "label": "..."},      # when registered
          "pmc2.launch_config": {"digest": ..., "egress_policy_digest": ...,
                                 "model_bundle_digest": ..., "peers": {...}},  # when known
          "pmc2.root": "amd" | "<label of an explicitly configured root>"
        }
      }
    }

``ear.status`` is the worst tier of the trustworthiness vector (AR4SI: 2..31
affirming, 32..95 warning, 96..127 contraindicated). A token is only issued for
evidence that passed appraisal; ``hardware`` is 2 (genuine) when the chain ends in
AMD's pinned ARK and 32 when it ends in an explicitly configured, non-AMD root (the
simulated platform), so development tokens carry ``warning``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from attestation._errors import MalformedError
from attestation._service._binding import b64url_decode, b64url_encode
from attestation._service._errors import TokenError
from attestation._service._keys import JWS_ALG, MAX_TOKEN_LIFETIME
from sealed import EnclavePublicKey
from sealed import MalformedError as SealedMalformedError

__all__ = [
    "EAT_PROFILE",
    "SUBMOD",
    "AttestationResult",
    "sign_claims",
    "status_of",
    "verify_attestation_token",
]

EAT_PROFILE = "tag:github.com,2023:veraison/ear"
SUBMOD = "sev-snp"
APPRAISAL_POLICY_ID_PREFIX = "urn:pmc2:appraisal:sha384:"
STATUSES = ("affirming", "warning", "contraindicated")
MAX_TOKEN_SIZE = 16384


def status_of(vector: Mapping[str, int]) -> str:
    """The EAR status (trust tier) of a trustworthiness vector: its worst claim."""
    worst = "affirming"
    for value in vector.values():
        if value >= 96 or value < 0 or value == 1:
            return "contraindicated"
        if value >= 32:
            worst = "warning"
    return worst


def sign_claims(claims: Mapping[str, Any], kid: str, key: ECKey) -> str:
    """A compact JWS (ES384) over ``claims``."""
    header = {"alg": JWS_ALG, "typ": "JWT", "kid": kid}
    return jwt.encode(header, dict(claims), key, algorithms=[JWS_ALG])


def new_jti() -> str:
    return b64url_encode(secrets.token_bytes(16))


@dataclass(frozen=True)
class AttestationResult:
    """A verified attestation-result token and its decoded claims."""

    token: str
    claims: Mapping[str, Any] = field(repr=False)
    issuer: str
    issued_at: datetime
    expires_at: datetime
    status: str
    trust_vector: Mapping[str, int]
    public_key: EnclavePublicKey
    key_id: str
    nonce: bytes
    nonce_source: str
    measurement: bytes
    host_data: bytes
    reported_tcb: Mapping[str, int]
    product: str
    appraisal_policy_digest: str
    key_release_policy_digest: str
    amd_root: bool
    reference_value: Mapping[str, Any] | None = None
    launch_config: Mapping[str, Any] | None = None

    @property
    def launch_config_digest(self) -> bytes:
        """The launch-configuration digest, which is HOST_DATA."""
        return self.host_data


def _require(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TokenError(f"token claim {where}{key} is missing or not a {kind.__name__}")
    return value


def _hex(mapping: Mapping[str, Any], key: str, size: int, where: str) -> bytes:
    text = _require(mapping, key, str, where)
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise TokenError(f"token claim {where}{key} is not hex") from None
    if len(value) != size:
        raise TokenError(f"token claim {where}{key} is not {size} bytes")
    return value


def _key_set(keys: KeySet | Mapping[str, Any]) -> KeySet:
    if isinstance(keys, KeySet):
        return keys
    try:
        return KeySet.import_key_set(dict(keys))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise TokenError(f"the key set is not a valid JWKS: {exc}") from None


def verify_attestation_token(
    token: str,
    keys: KeySet | Mapping[str, Any],
    *,
    at: datetime,
    issuer: str | None = None,
    expected_key: EnclavePublicKey | None = None,
    allow_warning: bool = False,
    leeway: float = 0.0,
) -> AttestationResult:
    """Verify an attestation-result token and decode its claims.

    Checklist:

    T1. A compact JWS of at most 16 KiB whose header names ``alg`` ES384 (nothing else
        is accepted) and a ``kid`` of the key set ``keys`` (the service's JWKS, pinned
        by the caller).
    T2. The ES384 signature verifies with that key (RFC 7515, RFC 7518 section 3.4).
    T3. ``iat`` is not after ``at`` (+ ``leeway``), ``exp`` is after ``at``
        (- ``leeway``), and the lifetime is at most 86400 s.
    T4. ``iss`` equals ``issuer`` when given.
    T5. ``eat_profile`` is the EAR profile; the ``sev-snp`` submodule's ``ear.status``
        is ``affirming``, or ``warning`` only with ``allow_warning`` (a non-AMD root:
        the simulated platform).
    T6. ``cnf.jwk`` is a valid enclave public key whose key id equals ``pmc2.key_id``,
        and equals ``expected_key`` when given (a token presented for another key is
        refused).
    T7. Every other claim this class exposes is present with its type and size.

    Raises :class:`TokenError` naming the failed check.
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    # T1
    if not isinstance(token, str) or len(token) > MAX_TOKEN_SIZE or token.count(".") != 2:
        raise TokenError("not a compact JWS of at most 16 KiB")
    key_set = _key_set(keys)
    try:
        decoded = jwt.decode(token, key_set, algorithms=[JWS_ALG])
    except JoseError as exc:
        # T2
        raise TokenError(f"token signature or format invalid: {exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise TokenError(f"token is malformed: {exc}") from None
    if decoded.header.get("alg") != JWS_ALG:
        raise TokenError("token alg is not ES384")
    claims: dict[str, Any] = dict(decoded.claims)
    # T3
    now = at.timestamp()
    iat = _require(claims, "iat", int, "")
    exp = _require(claims, "exp", int, "")
    if iat > now + leeway:
        raise TokenError("token issued in the future (iat after the reference time)")
    if exp <= now - leeway:
        raise TokenError("token expired")
    if exp - iat > MAX_TOKEN_LIFETIME or exp <= iat:
        raise TokenError("token lifetime is not within 0 .. 86400 s")
    # T4
    iss = _require(claims, "iss", str, "")
    if issuer is not None and iss != issuer:
        raise TokenError(f"token issuer {iss!r} is not {issuer!r}")
    # T5
    if claims.get("eat_profile") != EAT_PROFILE:
        raise TokenError("token eat_profile is not the EAR profile")
    submods = _require(claims, "submods", dict, "")
    sub = submods.get(SUBMOD)
    if not isinstance(sub, dict):
        raise TokenError(f"token has no {SUBMOD} submodule")
    where = f"submods.{SUBMOD}."
    status = _require(sub, "ear.status", str, where)
    if status not in STATUSES:
        raise TokenError(f"token status {status!r} unknown")
    if status == "contraindicated" or (status == "warning" and not allow_warning):
        raise TokenError(f"token status is {status}")
    vector = _require(sub, "ear.trustworthiness-vector", dict, where)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vector.values()):
        raise TokenError("token trustworthiness vector is malformed")
    if status_of(vector) != status:
        raise TokenError("token status does not follow from its trustworthiness vector")
    # T6
    cnf = _require(claims, "cnf", dict, "")
    jwk = cnf.get("jwk")
    if not isinstance(jwk, dict):
        raise TokenError("token has no cnf.jwk")
    try:
        public_key = EnclavePublicKey.from_jwk(jwk)
    except SealedMalformedError as exc:
        raise TokenError(f"token cnf.jwk is not an enclave key: {exc}") from None
    key_id = _require(claims, "pmc2.key_id", str, "")
    if key_id != public_key.key_id.hex:
        raise TokenError("token pmc2.key_id is not the key id of cnf.jwk")
    if expected_key is not None and expected_key != public_key:
        raise TokenError(
            f"token is bound to enclave key {key_id}, not the expected {expected_key.key_id.hex}"
        )
    # T7
    try:
        nonce = b64url_decode(_require(claims, "eat_nonce", str, ""), "eat_nonce", max_size=64)
    except MalformedError as exc:
        raise TokenError(f"token {exc}") from None
    source = _require(claims, "pmc2.nonce_source", str, "")
    if source not in ("service", "client"):
        raise TokenError("token pmc2.nonce_source is neither service nor client")
    policy_id = _require(sub, "ear.appraisal-policy-id", str, where)
    if not policy_id.startswith(APPRAISAL_POLICY_ID_PREFIX):
        raise TokenError("token ear.appraisal-policy-id is not a PMC2 appraisal policy id")
    digests = _require(sub, "pmc2.policy_digests", dict, where)
    tcb = _require(sub, "pmc2.reported_tcb", dict, where)
    root = _require(sub, "pmc2.root", str, where)
    reference = sub.get("pmc2.reference_value")
    launch = sub.get("pmc2.launch_config")
    return AttestationResult(
        token=token,
        claims=claims,
        issuer=iss,
        issued_at=datetime.fromtimestamp(iat, UTC),
        expires_at=datetime.fromtimestamp(exp, UTC),
        status=status,
        trust_vector=dict(vector),
        public_key=public_key,
        key_id=key_id,
        nonce=nonce,
        nonce_source=source,
        measurement=_hex(sub, "pmc2.measurement", 48, where),
        host_data=_hex(sub, "pmc2.host_data", 32, where),
        reported_tcb={str(k): int(v) for k, v in tcb.items()},
        product=_require(sub, "pmc2.product", str, where),
        appraisal_policy_digest=_require(digests, "appraisal", str, where + "policy_digests."),
        key_release_policy_digest=_require(digests, "key_release", str, where + "policy_digests."),
        amd_root=root == "amd",
        reference_value=reference if isinstance(reference, dict) else None,
        launch_config=launch if isinstance(launch, dict) else None,
    )
