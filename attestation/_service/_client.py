"""Clients of the attestation service: the enclave's (attest, key release) and the operator's.

:class:`AttestationClient` is what an enclave (or a client app using ``/v1/verify``) runs::

    client = AttestationClient("http://127.0.0.1:8401")
    result = client.attest(provider, key_pair)          # challenge, report, attest
    secret = client.resource("model-bundle-key", result.token, key_pair)

:class:`AdminClient` signs every request with the operator's Ed25519 key (``_operator``).

Answers map to errors by kind: a problem document with a 4xx status raises
:class:`ServiceRefusedError` (``trust_failure`` for 401/403); an unreachable service, a
timeout, a 5xx or an answer that is not what the protocol says raises
:class:`ServiceUnavailableError`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from attestation._errors import MalformedError
from attestation._provider import ReportProvider
from attestation._service._binding import b64url_decode, b64url_encode, runtime_data_hash
from attestation._service._errors import (
    ServiceRefusedError,
    ServiceUnavailableError,
    TokenError,
)
from attestation._service._operator import operator_token
from attestation._service._release import open_released_secret
from attestation._service._store import read_private, write_private
from attestation._service._tokens import AttestationResult, verify_attestation_token
from sealed import EnclaveKeyPair, EnclavePublicKey

__all__ = [
    "AdminClient",
    "AttestationClient",
    "generate_operator_key",
    "load_operator_private_key",
]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _answer(response: httpx.Response) -> Any:
    """The JSON answer, or the error it stands for."""
    status = response.status_code
    if status >= 500:
        raise ServiceUnavailableError(f"attestation service answered HTTP {status}")
    if status >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            problem = {"title": response.reason_phrase, "detail": "no problem document"}
        raise ServiceRefusedError(status, problem)
    return response


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        raise ServiceUnavailableError("attestation service answered with non-JSON") from None
    if not isinstance(doc, dict):
        raise ServiceUnavailableError("attestation service answered with a non-object")
    return doc


class _Http:
    def __init__(
        self,
        base_url: str,
        transport: httpx.BaseTransport | None,
        timeout: float,
        http: httpx.Client | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise MalformedError(f"service URL must be http(s): {base_url!r}")
        self._owned = http is None
        if http is not None:
            self._http = http
            self._base = base_url.rstrip("/")
            return
        self._base = ""
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": "pmc2-attestation-client/1"},
        )

    def send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._http.send(request)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                f"attestation service unreachable: {type(exc).__name__}: {exc}"
            ) from None
        _answer(response)
        return response

    def build(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        return self._http.build_request(method, self._base + path, **kwargs)

    def close(self) -> None:
        if self._owned:
            self._http.close()


class AttestationClient:
    """The enclave's (and a verifying client's) side of the attestation protocol.

    ``jwks``: a pinned JWK Set for token verification (default: fetched from the
    service); ``issuer``: the expected ``iss``; ``clock``: the time tokens are checked
    at; ``transport``: an httpx transport (tests); ``http``: an existing
    ``httpx.Client`` to send through instead (not closed by this client).
    """

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        jwks: Mapping[str, Any] | None = None,
        issuer: str | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        http: httpx.Client | None = None,
    ) -> None:
        self._http = _Http(base_url, transport, timeout, http)
        self._jwks = dict(jwks) if jwks is not None else None
        self._issuer = issuer
        self._clock = clock

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AttestationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol steps --------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        """The service's current JWK Set (use a pinned one when you can)."""
        return _json(self._http.send(self._http.build("GET", "/.well-known/jwks.json")))

    def challenge(self) -> bytes:
        """A fresh single-use nonce from ``POST /v1/challenge``."""
        doc = _json(self._http.send(self._http.build("POST", "/v1/challenge")))
        try:
            nonce = b64url_decode(doc.get("nonce"), "nonce", max_size=64)
        except MalformedError as exc:
            raise ServiceUnavailableError(f"bad challenge answer: {exc}") from None
        return nonce

    @staticmethod
    def evidence(
        provider: ReportProvider,
        nonce: bytes,
        public_key: EnclavePublicKey,
        *,
        vmpl: int = 0,
    ) -> dict[str, Any]:
        """Evidence for ``nonce`` and ``public_key``: a report whose REPORT_DATA binds them,
        with the host's certificate table when it supplied one."""
        guest = provider.get_report(runtime_data_hash(nonce, public_key), vmpl)
        out: dict[str, Any] = {"report": b64url_encode(guest.report)}
        if len(guest.certs):
            out["cert_table"] = b64url_encode(guest.certs.to_bytes())
        return out

    def _result(self, doc: Mapping[str, Any], key: EnclavePublicKey) -> AttestationResult:
        token = doc.get("token")
        if not isinstance(token, str):
            raise ServiceUnavailableError("the service's answer carries no token")
        keys = self._jwks if self._jwks is not None else self.jwks()
        return verify_attestation_token(
            token,
            keys,
            at=self._clock(),
            issuer=self._issuer,
            expected_key=key,
            allow_warning=True,
        )

    def submit(
        self, nonce: bytes, public_key: EnclavePublicKey, evidence: Mapping[str, Any]
    ) -> AttestationResult:
        """``POST /v1/attest``: the verified token for ``public_key``."""
        body = {
            "nonce": b64url_encode(nonce),
            "public_key": public_key.to_jwk(),
            "evidence": dict(evidence),
        }
        response = self._http.send(self._http.build("POST", "/v1/attest", json=body))
        return self._result(_json(response), public_key)

    def attest(
        self,
        provider: ReportProvider,
        key: EnclaveKeyPair | EnclavePublicKey,
        *,
        vmpl: int = 0,
    ) -> AttestationResult:
        """Challenge, report bound to nonce and key, attest; the verified token.

        The token's status may be ``warning`` (a service trusting the simulated root);
        check ``result.status`` / ``result.amd_root`` for production use.
        """
        public_key = key.public_key if isinstance(key, EnclaveKeyPair) else key
        nonce = self.challenge()
        evidence = self.evidence(provider, nonce, public_key, vmpl=vmpl)
        return self.submit(nonce, public_key, evidence)

    def verify(
        self, nonce: bytes, public_key: EnclavePublicKey, evidence: Mapping[str, Any]
    ) -> AttestationResult:
        """``POST /v1/verify``: appraise evidence bound to the caller's own ``nonce``."""
        body = {
            "nonce": b64url_encode(nonce),
            "public_key": public_key.to_jwk(),
            "evidence": dict(evidence),
        }
        response = self._http.send(self._http.build("POST", "/v1/verify", json=body))
        result = self._result(_json(response), public_key)
        if result.nonce != nonce:
            raise TokenError("the verification result is not bound to our nonce")
        return result

    def fetch_resource(self, name: str, token: str) -> str:
        """``GET /v1/resource/{name}``: the compact JWE (see :func:`open_released_secret`)."""
        request = self._http.build(
            "GET", f"/v1/resource/{name}", headers={"Authorization": f"Bearer {token}"}
        )
        text = self._http.send(request).text
        if text.count(".") != 4:
            raise ServiceUnavailableError("the service's answer is not a compact JWE")
        return text

    def resource(self, name: str, token: str, key_pair: EnclaveKeyPair) -> bytes:
        """Fetch and decrypt resource ``name`` with the enclave's key pair."""
        return open_released_secret(
            self.fetch_resource(name, token), key_pair, expected_resource=name
        )


# ------------------------------------------------------------------------------ operator


def generate_operator_key(path: Path) -> ed25519.Ed25519PublicKey:
    """Create an operator key pair: ``path`` (private, PKCS#8 PEM, 0600) and
    ``path.pub`` (public, PEM); refuses to overwrite."""
    if path.exists():
        raise MalformedError(f"{path} exists; refusing to overwrite an operator key")
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem)
    public = private.public_key()
    pub_path = path.with_name(path.name + ".pub")
    pub_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public


def load_operator_private_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """The operator's private key (the file must be 0600)."""
    try:
        data = read_private(path)
    except OSError as exc:
        raise MalformedError(f"cannot read operator key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise MalformedError(f"{path} is not a PEM private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise MalformedError(f"{path} is not an Ed25519 private key")
    return key


class AdminClient:
    """The operator's client for ``/v1/admin/``: every request carries an operator JWT
    (``_operator``) bound to its method, path and body, valid ``token_lifetime`` s.

    ``transport`` / ``http`` as for :class:`AttestationClient`.
    """

    def __init__(
        self,
        base_url: str,
        operator_key: ed25519.Ed25519PrivateKey,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        clock: Callable[[], dt.datetime] = _utcnow,
        token_lifetime: int = 60,
        http: httpx.Client | None = None,
    ) -> None:
        self._http = _Http(base_url, transport, timeout, http)
        self._key = operator_key
        self._clock = clock
        self._lifetime = token_lifetime

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """A signed admin request; the JSON answer."""
        headers = {}
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        elif content_type is not None:
            headers["Content-Type"] = content_type
        request = self._http.build(
            method, path, content=content or b"", params=dict(params or {}), headers=headers
        )
        target = request.url.raw_path.decode("latin-1")
        token = operator_token(
            self._key,
            method,
            target,
            content or b"",
            now=self._clock(),
            lifetime=self._lifetime,
        )
        request.headers["Authorization"] = f"Bearer {token}"
        return _json(self._http.send(request))

    # -- operations ------------------------------------------------------------------

    def register(
        self,
        measurement: bytes,
        label: str,
        *,
        host_data: bytes | None = None,
        launch_config: str | None = None,
        expires_at: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"measurement": measurement.hex(), "label": label}
        if host_data is not None:
            body["host_data"] = host_data.hex()
        if launch_config is not None:
            body["launch_config"] = launch_config
        if expires_at is not None:
            body["expires_at"] = expires_at
        return self.request("POST", "/v1/admin/reference-values", json_body=body)

    def reference_values(self) -> list[dict[str, Any]]:
        doc = self.request("GET", "/v1/admin/reference-values")
        values = doc.get("reference_values")
        if not isinstance(values, list):
            raise ServiceUnavailableError("malformed reference-value list")
        return values

    def revoke(self, registration_id: int) -> dict[str, Any]:
        return self.request("DELETE", f"/v1/admin/reference-values/{int(registration_id)}")

    def get_policy(self, kind: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/admin/policies/{kind}")

    def set_policy(self, kind: str, document: str | bytes) -> dict[str, Any]:
        raw = document.encode() if isinstance(document, str) else document
        return self.request(
            "PUT", f"/v1/admin/policies/{kind}", content=raw, content_type="application/toml"
        )

    def put_resource(self, name: str, value: bytes) -> dict[str, Any]:
        return self.request(
            "PUT", f"/v1/admin/resources/{name}", json_body={"value": b64url_encode(value)}
        )

    def rotate_resource(self, name: str, value: bytes | None = None) -> dict[str, Any]:
        body = None if value is None else {"value": b64url_encode(value)}
        return self.request("POST", f"/v1/admin/resources/{name}/rotate", json_body=body)

    def resources(self) -> list[dict[str, Any]]:
        doc = self.request("GET", "/v1/admin/resources")
        values = doc.get("resources")
        if not isinstance(values, list):
            raise ServiceUnavailableError("malformed resource list")
        return values

    def audit(self, *, after: int = 0, limit: int = 100) -> dict[str, Any]:
        return self.request("GET", "/v1/admin/audit", params={"after": after, "limit": limit})

    def rotate_signing_key(self) -> str:
        doc = self.request("POST", "/v1/admin/signing-keys/rotate")
        kid = doc.get("kid")
        if not isinstance(kid, str):
            raise ServiceUnavailableError("malformed rotation answer")
        return kid


def random_secret(size: int = 32) -> bytes:
    """Fresh random bytes for a resource."""
    return os.urandom(size)
