"""What the client trusts: the pinned keys of the attestation service, the expectations on
what an enclave attests, and the verification of an attestation-result token against both.

Checklist of :func:`verify_offer` (an offer is one entry of the gateway's
``GET /v1/attestation`` list, or the result of a fresh-nonce verification), citing
docs/attestation-service.md ("Token claims"), docs/gateway_api.md (2.1) and
docs/protocol.md (9, "Attest first"):

K. Key set (:func:`select_pinned_keys`): only keys of the attestation service whose
   RFC 7638 SHA-256 thumbprint is pinned are used: K1. the JWKS is a JSON object with a
   ``keys`` array (at most 64 keys); K2. a key is used only when its thumbprint is in
   the pin; K3. a used key is a public EC P-384 key (no ``d``), ``alg`` absent or ES384,
   ``use`` absent or ``sig``, ``kid`` absent or equal to its thumbprint; K4. at least one
   key is used, else :class:`AttestationFailed` (the service's keys changed, or someone
   else answered at its URL).
T. Token (``attestation.verify_attestation_token``, checklist T1-T7 in
   ``attestation/_service/_tokens.py``): ES384 signature by a pinned key, ``iat``/``exp``
   against the client's clock, the issuer when configured, the EAR profile and a status
   consistent with the trustworthiness vector, ``cnf.jwk`` a valid enclave key whose key
   id is ``pmc2.key_id``. Any failure: :class:`AttestationFailed`.
B. Binding to what the gateway offered (the gateway is untrusted): B1. the token's
   ``cnf.jwk`` equals the offered public key and B2. its key id equals the offered key
   id; otherwise :class:`AttestationFailed` (a gateway swapping the enclave key). The
   client seals only to the token's key (protocol.md 9).
N. Freshness. Fresh-nonce mode: N1. ``eat_nonce`` is the client's nonce and N2.
   ``pmc2.nonce_source`` is ``client`` (the attestation service verified evidence for
   this very nonce, ``/v1/verify``). Default mode: N3. ``pmc2.nonce_source`` is
   ``service`` (the evidence answered a single-use challenge of the service, so it was
   fresh when the token was issued; a ``client``-nonce token in this mode could come from
   old evidence the untrusted gateway replayed to ``/v1/verify``).
   :class:`AttestationFailed` otherwise.
C. Consistency: C1. when the token names the launch configuration, its ``digest`` is the
   attested HOST_DATA (else :class:`AttestationFailed`).
E. Expectations (:class:`Expectations`), each a :class:`PolicyMismatch` naming the
   expected and the found value: E1. the key's HPKE suite is the client's; E2. status
   ``affirming`` (a chain to AMD's root), or ``warning`` only with
   ``allow_insecure_simulated_platform``; E3. the measurement is an accepted one (or any
   measurement the service's appraisal accepted: "any registered"); E4. HOST_DATA (the
   launch-configuration digest); E5. the egress-policy digest (requires the token to
   name the launch configuration); E6. the model-bundle digest; E7. the appraisal-policy
   digest; E8. the key-release-policy digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from attestation import TokenError, verify_attestation_token
from client._errors import AttestationFailed, PolicyMismatch
from sealed import DEFAULT_SUITE, EnclavePublicKey, HpkeSuite

__all__ = [
    "Attestation",
    "Expectations",
    "InsecureClientWarning",
    "JwksPin",
    "jwk_thumbprint",
    "select_pinned_keys",
    "verify_offer",
]

MAX_JWKS_KEYS = 64
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}
_BUNDLE_DIGEST = re.compile(r"(sha256|sha384|sha512):[0-9a-f]+")


class InsecureClientWarning(UserWarning):
    """Emitted when a client is configured to trust less than it should (an unpinned key
    set, or tokens for the simulated platform): development only."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, unpadded base64url) of a public JWK.

    The attestation service uses it as the ``kid`` of its token-signing keys, so it is
    also what a client pins.

    >>> jwk = {"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "BBBB", "kid": "ignored"}
    >>> jwk_thumbprint(jwk)
    '7vWJmHRyIZgAhXDXOIJKRpCrqigOo-DLgG-u4PyvgZk'
    """
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise ValueError(f"no thumbprint for key type {kty!r}")
    required: dict[str, str] = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise ValueError(f"JWK member {name!r} is missing")
        required[name] = value
    text = json.dumps(required, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
    return _b64url(hashlib.sha256(text.encode("ascii")).digest())


@dataclass(frozen=True, init=False)
class JwksPin:
    """Which token-signing keys of the attestation service the client accepts.

    Either ``thumbprints``: RFC 7638 thumbprints (the service's ``kid`` values) of the
    accepted keys; the key set is fetched from the service and only matching keys are
    used. Or ``key_set``: the pinned JWKS itself (nothing is fetched); with
    ``thumbprints`` too, only those of its keys are used. Obtain either from the
    operator over a channel you trust (see docs/client.md).

    >>> pin = JwksPin(thumbprints=["7vWJmHRyIZgAhXDXOIJKRpCrqigOo-DLgG-u4PyvgZk"])
    >>> pin.fetches, sorted(pin.thumbprints)[0][:8]
    (True, '7vWJmHRy')
    """

    thumbprints: frozenset[str]
    key_set: Mapping[str, Any] | None = field(repr=False)
    insecure_unpinned: bool

    def __init__(
        self,
        *,
        thumbprints: Iterable[str] = (),
        key_set: Mapping[str, Any] | None = None,
        insecure_unpinned: bool = False,
    ) -> None:
        prints = frozenset(thumbprints)
        for item in prints:
            if not isinstance(item, str) or _THUMBPRINT.fullmatch(item) is None:
                raise ValueError(f"{item!r} is not an RFC 7638 SHA-256 thumbprint (43 base64url)")
        if key_set is not None:
            keys = key_set.get("keys") if isinstance(key_set, Mapping) else None
            if not isinstance(keys, list) or not keys:
                raise ValueError("a pinned key set is a JWKS with a non-empty 'keys' array")
            try:
                derived = {jwk_thumbprint(k) for k in keys if isinstance(k, Mapping)}
            except ValueError as exc:
                raise ValueError(f"a pinned key set holds a bad key: {exc}") from None
            if prints and not prints <= derived:
                raise ValueError("thumbprints given with a key set must be of its keys")
            prints = prints or frozenset(derived)
            key_set = json.loads(json.dumps(dict(key_set)))
        if insecure_unpinned:
            if prints:
                raise ValueError("an unpinned key set takes no thumbprints")
            warnings.warn(
                "the attestation service's key set is not pinned: any key served at its URL "
                "is trusted (development only)",
                InsecureClientWarning,
                stacklevel=2,
            )
        elif not prints:
            raise ValueError("pin at least one key (thumbprints or key_set)")
        object.__setattr__(self, "thumbprints", prints)
        object.__setattr__(self, "key_set", key_set)
        object.__setattr__(self, "insecure_unpinned", insecure_unpinned)

    @classmethod
    def insecure_any(cls) -> JwksPin:
        """Trust whatever key set is served at the attestation service's URL (warns)."""
        return cls(insecure_unpinned=True)

    @property
    def fetches(self) -> bool:
        """Whether the key set is fetched from the service (not pinned as a whole)."""
        return self.key_set is None


def _jwks_keys(doc: object, where: str) -> list[Mapping[str, Any]]:
    # K1
    keys = doc.get("keys") if isinstance(doc, Mapping) else None
    if not isinstance(keys, list) or len(keys) > MAX_JWKS_KEYS:
        raise AttestationFailed(
            f"{where} is not a JWKS (a JSON object with a 'keys' array of at most "
            f"{MAX_JWKS_KEYS} keys)"
        )
    return [k for k in keys if isinstance(k, Mapping)]


def select_pinned_keys(doc: object, pin: JwksPin, *, where: str = "the key set") -> dict[str, Any]:
    """The JWKS of the pinned keys among ``doc`` (checklist K1-K4).

    >>> from joserfc.jwk import ECKey
    >>> key = ECKey.generate_key("P-384").as_dict(private=False)
    >>> pin = JwksPin(thumbprints=[jwk_thumbprint(key)])
    >>> len(select_pinned_keys({"keys": [key]}, pin)["keys"])
    1
    >>> select_pinned_keys({"keys": []}, pin)
    Traceback (most recent call last):
    ...
    client._errors.AttestationFailed: none of the 0 keys of the key set matches the pin: ...
    """
    keys = _jwks_keys(doc, where)
    chosen: list[dict[str, Any]] = []
    offered: list[str] = []
    for jwk in keys:
        try:
            thumbprint = jwk_thumbprint(jwk)
        except ValueError:
            continue
        offered.append(thumbprint)
        # K2
        if not pin.insecure_unpinned and thumbprint not in pin.thumbprints:
            continue
        # K3
        if (
            jwk.get("kty") != "EC"
            or jwk.get("crv") != "P-384"
            or "d" in jwk
            or jwk.get("alg", "ES384") != "ES384"
            or jwk.get("use", "sig") != "sig"
            or jwk.get("kid", thumbprint) != thumbprint
        ):
            continue
        entry = {name: jwk[name] for name in ("kty", "crv", "x", "y")}
        entry.update(kid=thumbprint, alg="ES384")
        chosen.append(entry)
    # K4
    if not chosen:
        pinned = "any" if pin.insecure_unpinned else ", ".join(sorted(pin.thumbprints))
        raise AttestationFailed(
            f"none of the {len(offered)} keys of {where} matches the pin: pinned [{pinned}], "
            f"offered [{', '.join(offered)}] (the service's keys changed, or something else "
            "answers at its URL)"
        )
    return {"keys": chosen}


def token_kid(token: str) -> str | None:
    """The ``kid`` of a compact JWS's protected header (unverified; for key lookup)."""
    head = token.split(".", 1)[0] if isinstance(token, str) else ""
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def _digests(values: Iterable[bytes | str] | None, size: int, what: str) -> frozenset[bytes] | None:
    if values is None:
        return None
    if isinstance(values, bytes | str):
        values = [values]
    out: set[bytes] = set()
    for item in values:
        value = item
        if isinstance(item, str):
            try:
                value = bytes.fromhex(item)
            except ValueError:
                raise ValueError(f"{what} {item!r} is not hex") from None
        if not isinstance(value, bytes) or len(value) != size:
            raise ValueError(f"a {what} is {size} bytes ({2 * size} hex digits)")
        out.add(value)
    if not out:
        raise ValueError(f"an empty set of {what}s accepts nothing; pass None to accept any")
    return frozenset(out)


@dataclass(frozen=True, init=False)
class Expectations:
    """What the client accepts in an attestation.

    Every set is optional: ``None`` accepts what the attestation service's appraisal
    accepted ("any registered": the operator registered the measurement and its launch
    configuration at the service). Values are bytes or hex strings: ``measurements``
    (48-byte SNP launch measurements, from ``sev-snp-measure`` / ``pmc2 admin
    measure``), ``launch_config_digests`` (32-byte HOST_DATA = the launch configuration's
    digest), ``egress_policy_digests`` (48-byte SHA-384 of the egress policy,
    ``EgressPolicy.digest()``), ``model_bundle_digests`` (``"sha384:<hex>"``),
    ``appraisal_policy_digests`` and ``key_release_policy_digests`` (48 bytes).
    ``issuer``: the expected ``iss``. ``allow_insecure_simulated_platform``: accept
    tokens whose chain ends in a configured non-AMD root (status ``warning``: the
    simulated platform); development only, warns.

    >>> e = Expectations(measurements=["a5" * 48])
    >>> e.measurements == frozenset({bytes.fromhex("a5" * 48)}), e.egress_policy_digests
    (True, None)
    """

    measurements: frozenset[bytes] | None
    launch_config_digests: frozenset[bytes] | None
    egress_policy_digests: frozenset[bytes] | None
    model_bundle_digests: frozenset[str] | None
    appraisal_policy_digests: frozenset[bytes] | None
    key_release_policy_digests: frozenset[bytes] | None
    issuer: str | None
    allow_insecure_simulated_platform: bool

    def __init__(
        self,
        *,
        measurements: Iterable[bytes | str] | None = None,
        launch_config_digests: Iterable[bytes | str] | None = None,
        egress_policy_digests: Iterable[bytes | str] | None = None,
        model_bundle_digests: Iterable[str] | None = None,
        appraisal_policy_digests: Iterable[bytes | str] | None = None,
        key_release_policy_digests: Iterable[bytes | str] | None = None,
        issuer: str | None = None,
        allow_insecure_simulated_platform: bool = False,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "measurements", _digests(measurements, 48, "measurement"))
        set_(self, "launch_config_digests", _digests(launch_config_digests, 32, "HOST_DATA"))
        set_(self, "egress_policy_digests", _digests(egress_policy_digests, 48, "egress digest"))
        bundles: frozenset[str] | None = None
        if model_bundle_digests is not None:
            if isinstance(model_bundle_digests, str):
                model_bundle_digests = [model_bundle_digests]
            bundles = frozenset(d.lower() for d in model_bundle_digests)
            if not bundles or not all(_BUNDLE_DIGEST.fullmatch(d) for d in bundles):
                raise ValueError("a model-bundle digest is 'sha256|sha384|sha512:<hex>'")
        set_(self, "model_bundle_digests", bundles)
        set_(self, "appraisal_policy_digests", _digests(appraisal_policy_digests, 48, "digest"))
        set_(self, "key_release_policy_digests", _digests(key_release_policy_digests, 48, "digest"))
        set_(self, "issuer", issuer)
        set_(self, "allow_insecure_simulated_platform", bool(allow_insecure_simulated_platform))
        if allow_insecure_simulated_platform:
            warnings.warn(
                "accepting attestations from a non-AMD root (the simulated platform): "
                "development only",
                InsecureClientWarning,
                stacklevel=2,
            )

    @classmethod
    def any_registered(cls) -> Expectations:
        """Accept any enclave the attestation service's appraisal accepted."""
        return cls()


@dataclass(frozen=True)
class Attestation:
    """A verified attestation of one enclave key (what :meth:`Client.attest` returns).

    ``key_id`` / ``public_key``: the enclave's HPKE key, the only key the client seals
    to; ``measurement``: the SNP launch measurement; ``host_data``: the launch
    configuration's digest; ``egress_policy_digest`` / ``model_bundle_digest``: from the
    registered launch configuration, when the token names it; ``appraisal_policy_digest``
    / ``key_release_policy_digest`` (hex); ``status``: ``affirming`` or ``warning``
    (simulated platform); ``fresh``: verified for this client's own nonce (the
    fresh-nonce mode); ``token`` and ``claims``: the raw token and its decoded claims.
    """

    key_id: str
    public_key: EnclavePublicKey
    measurement: bytes
    host_data: bytes
    egress_policy_digest: bytes | None
    model_bundle_digest: str | None
    appraisal_policy_digest: str
    key_release_policy_digest: str
    status: str
    amd_root: bool
    issuer: str
    issued_at: datetime
    expires_at: datetime
    nonce: bytes
    fresh: bool
    reference_label: str | None
    token: str = field(repr=False)
    claims: Mapping[str, Any] = field(repr=False)

    @property
    def suite(self) -> HpkeSuite:
        return self.public_key.suite

    @property
    def launch_config_digest(self) -> bytes:
        """The launch-configuration digest, which is HOST_DATA."""
        return self.host_data

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary (no token)."""
        return {
            "key_id": self.key_id,
            "suite": self.suite.name,
            "measurement": self.measurement.hex(),
            "host_data": self.host_data.hex(),
            "egress_policy_digest": None
            if self.egress_policy_digest is None
            else self.egress_policy_digest.hex(),
            "model_bundle_digest": self.model_bundle_digest,
            "appraisal_policy_digest": self.appraisal_policy_digest,
            "key_release_policy_digest": self.key_release_policy_digest,
            "status": self.status,
            "amd_root": self.amd_root,
            "issuer": self.issuer,
            "issued_at": self.issued_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "fresh": self.fresh,
            "reference_label": self.reference_label,
        }


def _short(value: bytes | str) -> str:
    return value.hex() if isinstance(value, bytes) else value


def _expect(what: str, accepted: Iterable[bytes | str] | None, found: bytes | str | None) -> None:
    if accepted is None:
        return
    values = sorted(_short(v) for v in accepted)
    if found is None:
        raise PolicyMismatch(what, expected=values, found="nothing (not in the token)")
    if found not in set(accepted):
        raise PolicyMismatch(what, expected=values, found=_short(found))


def verify_offer(
    token: str,
    keys: Mapping[str, Any],
    *,
    offered_key: EnclavePublicKey,
    offered_key_id: str,
    at: datetime,
    expect: Expectations,
    suite: HpkeSuite = DEFAULT_SUITE,
    nonce: bytes | None = None,
    leeway: float = 0.0,
) -> Attestation:
    """Verify ``token`` for the key the gateway offered (the module's checklist)."""
    # T
    try:
        result = verify_attestation_token(
            token, keys, at=at, issuer=expect.issuer, allow_warning=True, leeway=leeway
        )
    except TokenError as exc:
        raise AttestationFailed(f"the attestation token does not verify: {exc}") from None
    # B1, B2
    if result.public_key != offered_key or result.key_id != offered_key_id:
        raise AttestationFailed(
            f"the gateway offered enclave key {offered_key_id} (JWK key id "
            f"{offered_key.key_id.hex}) with a token bound to key {result.key_id}: refusing "
            "to seal to a key the token does not attest"
        )
    # N1, N2
    if nonce is not None:
        if result.nonce != nonce:
            raise AttestationFailed(
                f"the verification is bound to nonce {_b64url(result.nonce)}, "
                f"not this client's {_b64url(nonce)}"
            )
        if result.nonce_source != "client":
            raise AttestationFailed(
                f"the token's nonce source is {result.nonce_source!r}, not 'client'"
            )
    # N3
    elif result.nonce_source != "service":
        raise AttestationFailed(
            f"the token's nonce source is {result.nonce_source!r}, not 'service': without "
            "the client's own nonce only tokens for evidence that answered the attestation "
            "service's challenge are fresh (use the fresh-nonce mode to verify evidence "
            "for your own nonce)"
        )
    # C1
    launch = result.launch_config
    egress: bytes | None = None
    bundle: str | None = None
    if launch is not None:
        digest = launch.get("digest")
        if digest != result.host_data.hex():
            raise AttestationFailed(
                f"the token's launch configuration digest {digest!r} is not its HOST_DATA "
                f"{result.host_data.hex()}"
            )
        raw_egress = launch.get("egress_policy_digest")
        try:
            egress = bytes.fromhex(raw_egress) if isinstance(raw_egress, str) else None
        except ValueError:
            egress = None
        if egress is None or len(egress) != 48:
            raise AttestationFailed("the token's launch configuration has no egress digest")
        raw_bundle = launch.get("model_bundle_digest")
        bundle = raw_bundle.lower() if isinstance(raw_bundle, str) else None
    # E1
    if result.public_key.suite != suite:
        raise PolicyMismatch(
            "HPKE suite", expected=[suite.name], found=result.public_key.suite.name
        )
    # E2
    if result.status != "affirming" and not (
        result.status == "warning" and expect.allow_insecure_simulated_platform
    ):
        raise PolicyMismatch(
            "attestation status",
            expected=["affirming"],
            found=f"{result.status} (root {result.claims['submods']['sev-snp'].get('pmc2.root')})",
            hint="a chain that does not end in AMD's root, e.g. the simulated platform; "
            "accept it only for development with allow_insecure_simulated_platform",
        )
    # E3-E8
    _expect("measurement", expect.measurements, result.measurement)
    _expect(
        "HOST_DATA (launch-configuration digest)", expect.launch_config_digests, result.host_data
    )
    _expect("egress policy digest", expect.egress_policy_digests, egress)
    _expect("model bundle digest", expect.model_bundle_digests, bundle)
    appraisal = _hex_or_none(result.appraisal_policy_digest)
    _expect("appraisal policy digest", expect.appraisal_policy_digests, appraisal)
    release = _hex_or_none(result.key_release_policy_digest)
    _expect("key-release policy digest", expect.key_release_policy_digests, release)
    reference = result.reference_value
    label = reference.get("label") if reference is not None else None
    return Attestation(
        key_id=result.key_id,
        public_key=result.public_key,
        measurement=result.measurement,
        host_data=result.host_data,
        egress_policy_digest=egress,
        model_bundle_digest=bundle,
        appraisal_policy_digest=result.appraisal_policy_digest,
        key_release_policy_digest=result.key_release_policy_digest,
        status=result.status,
        amd_root=result.amd_root,
        issuer=result.issuer,
        issued_at=result.issued_at,
        expires_at=result.expires_at,
        nonce=result.nonce,
        fresh=nonce is not None,
        reference_label=label if isinstance(label, str) else None,
        token=token,
        claims=result.claims,
    )


def _hex_or_none(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None
