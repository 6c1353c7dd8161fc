"""The attestation service and key broker (starlette): ``create_app(ServiceConfig)``.

Public endpoints (all errors are RFC 7807 problem documents, see ``_problems``)::

    GET  /healthz                 liveness
    GET  /.well-known/jwks.json   token-verification keys (current + retired in grace)
    POST /v1/challenge            -> {"nonce": <32 bytes b64url>, "expires_at": <epoch s>}
    POST /v1/attest               {"nonce", "public_key": <JWK>, "evidence": {...}}
                                  -> {"token", "status", "claims"}
    POST /v1/verify               {"nonce": <client nonce, 16..64 bytes>, "public_key",
                                   "evidence"} -> {"token", "status", "claims"}
    GET  /v1/resource/{name}      Authorization: Bearer <token> -> application/jose (JWE)

``evidence``: ``{"report": <b64url>, "vcek"|"vlek": <b64url DER>, "cert_chain": <PEM>,
"cert_table": <b64url extended-report certificate table>, "product": "Milan"}``; only
``report`` is required when the service fetches certificates from AMD's KDS. Binary
members are unpadded base64url. REPORT_DATA must bind the nonce and the public key
(``_binding``). Admin endpoints: ``_admin``.

Attestation (``/v1/attest``), checklist:

S1. The request parses strictly (400 otherwise): a 32-byte nonce, an enclave public key
    (``sealed.EnclavePublicKey.from_jwk``), the evidence.
S2. The nonce is consumed atomically: it must have been issued by this service, be
    unexpired and unused (403 ``nonce-rejected``). A consumed nonce never comes back,
    whatever the outcome.
S3. The evidence is verified and appraised (``_appraiser`` E1-E6) at the current time
    with the appraisal policy in force and the active reference values.
S4. Any failure: 403 ``appraisal-failed`` with every reason in ``failures`` and
    ``ear_status: contraindicated`` (audited). Otherwise a token (``_tokens``) whose
    lifetime is the policy's ``token_lifetime_seconds``, capped at the matched
    registration's expiry (audited).

Verification (``/v1/verify``) is the same for the client's own nonce (16 to 64 bytes,
not stored: freshness is the client's); its tokens say ``pmc2.nonce_source: client`` and
never release keys.

Key release (``/v1/resource/{name}``), checklist:

R1. A bearer token (401 ``token-required``).
R2. It verifies (``verify_attestation_token`` T1-T7 with this service's keys, issuer and
    current time; ``warning`` accepted only while the service is configured with
    ``insecure_roots``: a token from a simulated root releases nothing once the same
    state is served with AMD's roots alone) (401 ``token-invalid``).
R3. It came from ``/v1/attest`` (service nonce) (403 ``release-denied``).
R4. Its MEASUREMENT / HOST_DATA still match an accepted reference value now (a
    registration revoked or expired since the token was issued stops releases)
    (403 ``release-denied``).
R5. The key-release policy allows ``name`` for that MEASUREMENT / HOST_DATA
    (403 ``release-denied`` with the policy's reason).
R6. The resource exists (404 ``unknown-resource``; checked after the policy so a denied
    caller learns nothing about which resources exist).
R7. The enclave key is X25519 (suite HPKE-3): the JWE is ECDH-ES + A256GCM (RFC 7518
    section 4.6, RFC 8037) to the token's ``cnf`` key, with ``kid`` the enclave key id
    and ``pmc2-resource`` / ``pmc2-version`` in the protected header (422 otherwise).

Every attestation, verification, release and refusal is written to the audit log.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import warnings
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, TypeVar

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from attestation._errors import MalformedError
from attestation._service._appraiser import EVIDENCE_MEMBERS, Appraisal, Appraiser, Evidence
from attestation._service._binding import (
    CLIENT_NONCE_SIZES,
    NONCE_SIZE,
    b64url_decode,
    b64url_encode,
)
from attestation._service._config import InsecureRootsWarning, ServiceConfig
from attestation._service._errors import TokenError
from attestation._service._keys import MasterKey, SigningKeys
from attestation._service._middleware import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    TimeoutMiddleware,
)
from attestation._service._policystore import PolicyStore
from attestation._service._problems import Fields, ProblemError, parse_json_object, problem_response
from attestation._service._release import seal_secret, supports_release
from attestation._service._store import Store
from attestation._service._tokens import (
    APPRAISAL_POLICY_ID_PREFIX,
    EAT_PROFILE,
    SUBMOD,
    new_jti,
    sign_claims,
    status_of,
    verify_attestation_token,
)
from policies import PolicyError
from sealed import EnclavePublicKey
from sealed import MalformedError as SealedMalformedError

__all__ = ["AttestationService", "create_app"]

logger = logging.getLogger("pmc2.attestation.service")

RESOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RESOURCE_MEDIA_TYPE = "application/jose"
_T = TypeVar("_T")


def _version() -> str:
    try:
        from pmc2 import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"


class AttestationService:
    """The service's state and operations (framework-independent, thread-safe)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.store = Store(config.state_dir)
        self.master_key = MasterKey.load_or_create(self.store.keys_dir / "master.key")
        self.signing_keys = SigningKeys(
            self.store,
            rotation_period=config.signing_key_rotation,
            clock=lambda: config.now().timestamp(),
        )
        self.policies = PolicyStore(self.store)
        self.appraiser = Appraiser(config, self.store)
        self.signing_keys.current()
        self.build = f"pmc2 {_version()}"

    def close(self) -> None:
        self.store.close()

    def now(self) -> datetime:
        return self.config.now()

    def audit(self, event: str, outcome: str, actor: str, **detail: Any) -> None:
        self.store.audit(event, outcome, actor, detail, self.now().timestamp())

    # -- challenge -------------------------------------------------------------------

    def challenge(self) -> dict[str, Any]:
        now = self.now().timestamp()
        if self.store.outstanding_nonces(now) >= self.config.max_outstanding_nonces:
            raise ProblemError(
                503,
                "too-many-challenges",
                "too many outstanding challenges; retry later",
                headers={"Retry-After": "5"},
            )
        nonce = secrets.token_bytes(NONCE_SIZE)
        expires = now + self.config.nonce_lifetime
        self.store.add_nonce(nonce, expires, now)
        return {"nonce": b64url_encode(nonce), "expires_at": int(expires)}

    # -- attest / verify -------------------------------------------------------------

    @staticmethod
    def _parse_attestation(
        body: bytes, sizes: tuple[int, int]
    ) -> tuple[bytes, EnclavePublicKey, Evidence]:
        f = Fields(parse_json_object(body), "", ("nonce", "public_key", "evidence"))
        try:
            nonce = b64url_decode(f.string("nonce", max_length=128), "nonce", max_size=64)
        except MalformedError as exc:
            raise f.error("nonce", str(exc)) from None
        if not sizes[0] <= len(nonce) <= sizes[1]:
            want = str(sizes[0]) if sizes[0] == sizes[1] else f"{sizes[0]} to {sizes[1]}"
            raise f.error("nonce", f"must be {want} bytes")
        try:
            public_key = EnclavePublicKey.from_jwk(f.raw_object("public_key"))
        except SealedMalformedError as exc:
            raise f.error("public_key", str(exc)) from None
        evidence = Evidence.from_fields(f.obj("evidence", EVIDENCE_MEMBERS))
        return nonce, public_key, evidence

    def attest(self, body: bytes, client: str) -> dict[str, Any]:
        """S1-S4."""
        nonce, public_key, evidence = self._parse_attestation(body, (NONCE_SIZE, NONCE_SIZE))
        at = self.now()
        key_id = public_key.key_id.hex
        if not self.store.consume_nonce(nonce, at.timestamp()):  # S2
            state = self.store.nonce_state(nonce, at.timestamp())
            detail = {
                "unknown": "the nonce was not issued by this service",
                "used": "the nonce was already used (replay)",
                "expired": "the nonce expired",
            }.get(state, "the nonce is not valid")
            self.audit("attest", "refused", client, key_id=key_id, reason=detail)
            raise ProblemError(403, "nonce-rejected", detail, ear_status="contraindicated")
        return self._appraise_and_issue(
            "attest",
            nonce=nonce,
            public_key=public_key,
            evidence=evidence,
            at=at,
            client=client,
            source="service",
        )

    def verify(self, body: bytes, client: str) -> dict[str, Any]:
        """The same appraisal for a client-supplied nonce (no key release)."""
        nonce, public_key, evidence = self._parse_attestation(body, CLIENT_NONCE_SIZES)
        return self._appraise_and_issue(
            "verify",
            nonce=nonce,
            public_key=public_key,
            evidence=evidence,
            at=self.now(),
            client=client,
            source="client",
        )

    def _appraise_and_issue(
        self,
        event: str,
        *,
        nonce: bytes,
        public_key: EnclavePublicKey,
        evidence: Evidence,
        at: datetime,
        client: str,
        source: str,
    ) -> dict[str, Any]:
        key_id = public_key.key_id.hex
        policy = self.policies.appraisal()
        try:
            appraisal = self.appraiser.appraise(  # S3
                evidence, nonce=nonce, public_key=public_key, policy=policy, at=at
            )
        except ProblemError as problem:
            self.audit(event, "refused", client, key_id=key_id, reason=problem.detail)
            raise
        report = appraisal.report
        facts = {
            "key_id": key_id,
            "measurement": report.measurement.hex(),
            "host_data": report.host_data.hex(),
            "chip_id": report.chip_id[:8].hex(),
        }
        if not appraisal.accepted:  # S4
            self.audit(event, "refused", client, failures=list(appraisal.failures), **facts)
            raise ProblemError(
                403,
                "appraisal-failed",
                f"the evidence failed appraisal: {'; '.join(appraisal.failures)}",
                failures=list(appraisal.failures),
                ear_status="contraindicated",
            )
        token, claims = self._issue(appraisal, source)
        status = claims["submods"][SUBMOD]["ear.status"]
        reg = appraisal.registration
        self.audit(
            event,
            status,
            client,
            reference_value=None if reg is None else reg.id,
            expires=claims["exp"],
            **facts,
        )
        return {"token": token, "status": status, "claims": claims}

    def _issue(self, appraisal: Appraisal, source: str) -> tuple[str, dict[str, Any]]:
        report = appraisal.report
        policy = appraisal.policy
        iat = int(appraisal.at.timestamp())
        exp = iat + policy.token_lifetime_seconds
        reg = appraisal.registration
        if reg is not None and reg.expires is not None:
            exp = max(iat + 1, min(exp, int(reg.expires)))
        vector = appraisal.trust_vector()
        verified = appraisal.verified
        sub: dict[str, Any] = {
            "ear.status": status_of(vector),
            "ear.trustworthiness-vector": vector,
            "ear.appraisal-policy-id": APPRAISAL_POLICY_ID_PREFIX + policy.digest_hex(),
            "pmc2.measurement": report.measurement.hex(),
            "pmc2.host_data": report.host_data.hex(),
            "pmc2.reported_tcb": report.reported_tcb.components(),
            "pmc2.product": report.product.value,
            "pmc2.signing_key": verified.signing_key,
            "pmc2.report_version": report.version,
            "pmc2.guest_svn": report.guest_svn,
            "pmc2.vmpl": report.vmpl,
            "pmc2.policy_digests": {
                "appraisal": policy.digest_hex(),
                "key_release": self.policies.key_release().digest_hex(),
            },
            "pmc2.root": "amd" if verified.amd_root else self.config.roots.label,
        }
        if reg is not None:
            sub["pmc2.reference_value"] = {"id": reg.id, "label": reg.label}
        launch = appraisal.launch_config()
        if launch is not None:
            sub["pmc2.launch_config"] = launch
        claims: dict[str, Any] = {
            "iss": self.config.issuer,
            "iat": iat,
            "exp": exp,
            "jti": new_jti(),
            "eat_profile": EAT_PROFILE,
            "eat_nonce": b64url_encode(appraisal.nonce),
            "ear.verifier-id": {"developer": "pmc2", "build": self.build},
            "cnf": {"jwk": appraisal.public_key.to_jwk()},
            "pmc2.key_id": appraisal.public_key.key_id.hex,
            "pmc2.nonce_source": source,
            "submods": {SUBMOD: sub},
        }
        kid, key = self.signing_keys.current()
        return sign_claims(claims, kid, key), claims

    # -- key release -----------------------------------------------------------------

    def release(self, name: str, authorization: str | None, client: str) -> str:
        """R1-R7: the resource as a compact JWE for the token's key."""
        if not RESOURCE_NAME.fullmatch(name):
            raise ProblemError(400, "malformed-request", "bad resource name")
        # R1
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self.audit("release", "refused", client, resource=name, reason="no bearer token")
            raise ProblemError(
                401,
                "token-required",
                "present the attestation-result token as a bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="pmc2-key-broker"'},
            )
        at = self.now()
        # R2
        try:
            result = verify_attestation_token(
                token,
                self.signing_keys.key_set(),
                at=at,
                issuer=self.config.issuer,
                allow_warning=self.config.insecure_roots is not None,
            )
        except TokenError as exc:
            self.audit("release", "refused", client, resource=name, reason=str(exc))
            raise ProblemError(
                401,
                "token-invalid",
                str(exc),
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        facts = {
            "resource": name,
            "key_id": result.key_id,
            "measurement": result.measurement.hex(),
            "host_data": result.host_data.hex(),
        }

        def deny(reason: str) -> ProblemError:
            self.audit("release", "refused", client, reason=reason, **facts)
            return ProblemError(403, "release-denied", reason)

        # R3
        if result.nonce_source != "service":
            raise deny("tokens from /v1/verify (client nonces) never release keys")
        # R4
        now = at.timestamp()
        values = [r.reference_value for r in self.store.active_reference_values(now)]
        policy = self.policies.appraisal()
        if policy.match_reference_value(result.measurement, result.host_data, values) is None:
            raise deny("the enclave's reference value is no longer accepted (revoked or expired)")
        # R5
        decision = self.policies.key_release().decide(
            name, measurement=result.measurement, host_data=result.host_data
        )
        if not decision.allowed:
            raise deny(f"the key-release policy denies {name!r}: {decision.reason}")
        # R6
        stored = self.store.latest_resource(name)
        if stored is None:
            self.audit("release", "refused", client, reason="unknown resource", **facts)
            raise ProblemError(404, "unknown-resource", f"no resource named {name!r}")
        # R7
        if not supports_release(result.public_key):
            self.audit("release", "refused", client, reason="not an X25519 key", **facts)
            raise ProblemError(
                422,
                "unsupported-key",
                "key release needs an X25519 (HPKE-3) enclave key: the secret is a JWE "
                "with ECDH-ES",
            )
        secret = self.master_key.decrypt(name, stored.version, stored.nonce, stored.ciphertext)
        sealed = seal_secret(secret, result.public_key, name, stored.version)
        self.audit(
            "release",
            "released",
            client,
            version=stored.version,
            rule=decision.reason,
            **facts,
        )
        return sealed

    # -- policies (admin) ------------------------------------------------------------

    def set_policy(self, kind: str, text: bytes, actor: str) -> dict[str, Any]:
        try:
            document = self.policies.set(kind, text.decode("utf-8"), self.now().timestamp())
        except UnicodeDecodeError:
            raise ProblemError(400, "malformed-request", "the policy must be UTF-8 TOML") from None
        except PolicyError as exc:
            self.audit("admin.policy.set", "refused", actor, kind=kind, reason=str(exc))
            raise ProblemError(422, "invalid-policy", str(exc)) from None
        self.audit("admin.policy.set", "ok", actor, kind=kind, digest=document.digest_hex())
        return {"kind": kind, "digest": document.digest_hex()}


async def _run(func: Callable[..., _T], *args: Any) -> _T:
    return await anyio.to_thread.run_sync(func, *args, abandon_on_cancel=True)


def _client(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "-"


def _public_routes(service: AttestationService) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def jwks(request: Request) -> Response:
        doc = await _run(service.signing_keys.jwks)
        return JSONResponse(
            doc, media_type="application/jwk-set+json", headers={"Cache-Control": "max-age=60"}
        )

    async def challenge(request: Request) -> Response:
        body = await request.body()
        if body.strip():
            Fields(parse_json_object(body), "", ())
        doc = await _run(service.challenge)
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    async def attest(request: Request) -> Response:
        body = await request.body()
        doc = await _run(service.attest, body, _client(request))
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    async def verify(request: Request) -> Response:
        body = await request.body()
        doc = await _run(service.verify, body, _client(request))
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    async def resource(request: Request) -> Response:
        name = request.path_params["name"]
        auth = request.headers.get("authorization")
        sealed = await _run(service.release, name, auth, _client(request))
        return Response(
            sealed, media_type=RESOURCE_MEDIA_TYPE, headers={"Cache-Control": "no-store"}
        )

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/v1/challenge", challenge, methods=["POST"]),
        Route("/v1/attest", attest, methods=["POST"]),
        Route("/v1/verify", verify, methods=["POST"]),
        Route("/v1/resource/{name}", resource, methods=["GET"]),
    ]


async def _problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc)


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: "not-found", 405: "method-not-allowed"}
    headers = dict(exc.headers or {})
    return problem_response(
        ProblemError(
            exc.status_code,
            kinds.get(exc.status_code, "http-error"),
            str(exc.detail),
            headers=headers,
        )
    )


async def _error_handler(request: Request, exc: Exception) -> Response:
    logger.error("internal error: %s", type(exc).__name__)
    return problem_response(ProblemError(500, "internal-error", "internal error"))


def create_app(config: ServiceConfig) -> Starlette:
    """The ASGI application of the attestation service and key broker.

    ``app.state.service`` is the :class:`AttestationService` (its ``close()`` releases the
    database; it is also closed at lifespan shutdown).
    """
    if config.insecure_roots is not None:
        message = (
            f"the attestation service trusts the explicitly configured roots "
            f"{config.insecure_roots.label!r} instead of AMD's: development only"
        )
        warnings.warn(message, InsecureRootsWarning, stacklevel=2)
        logger.warning(message)
    service = AttestationService(config)
    from attestation._service._admin import admin_routes

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    app = Starlette(
        routes=[*_public_routes(service), *admin_routes(service)],
        middleware=[
            Middleware(AccessLogMiddleware, enabled=config.access_log),
            Middleware(TimeoutMiddleware, seconds=config.request_timeout),
            Middleware(BodyLimitMiddleware, limit=config.max_body_bytes),
        ],
        exception_handlers={
            ProblemError: _problem_handler,
            HTTPException: _http_handler,
            Exception: _error_handler,
        },
        lifespan=lifespan,
    )
    app.state.service = service
    return app
