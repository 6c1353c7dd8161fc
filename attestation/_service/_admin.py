"""The admin API (``/v1/admin/``): every request signed by an operator key (``_operator``).

::

    GET    /v1/admin/reference-values              -> {"reference_values": [...]}
    POST   /v1/admin/reference-values              {"measurement": <48 bytes hex>,
                                                    "host_data": <32 bytes hex>,
                                                    "launch_config": <TOML text>,
                                                    "label": "...", "expires_at": <epoch s>}
                                                   -> 201 the registration
    DELETE /v1/admin/reference-values/{id}         revoke -> the registration
    GET    /v1/admin/policies/{kind}               kind: appraisal | key-release
                                                   -> {"kind", "digest", "default", "document"}
    PUT    /v1/admin/policies/{kind}               body: the TOML document -> {"kind", "digest"}
    GET    /v1/admin/resources                     -> {"resources": [{"name", "version", ...}]}
    PUT    /v1/admin/resources/{name}              {"value": <b64url>} -> {"name", "version"}
    POST   /v1/admin/resources/{name}/rotate       {"value": <b64url>} or empty (32 random
                                                   bytes) -> {"name", "version"}
    GET    /v1/admin/audit?after=N&limit=M         -> {"entries", "chain_intact", "count"}
    GET    /v1/admin/signing-keys                  -> {"keys": [...]}
    POST   /v1/admin/signing-keys/rotate           -> {"kid"}

A registration gives ``measurement`` and a ``label``, and optionally the HOST_DATA it
pins: ``host_data`` directly, or a complete ``launch_config`` document whose digest is the
HOST_DATA (both given: they must agree). Values never appear in answers or in the audit
log; resources are stored encrypted (``_keys.MasterKey``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from attestation._errors import MalformedError
from attestation._service._app import RESOURCE_NAME, AttestationService, _client, _run
from attestation._service._binding import b64url_decode
from attestation._service._operator import verify_operator_request
from attestation._service._policystore import POLICY_KINDS, policy_kind
from attestation._service._problems import Fields, ProblemError, parse_json_object
from policies import LaunchConfiguration, PolicyError, ReferenceValue

__all__ = ["admin_routes"]

MAX_SECRET = 16384
ROTATE_SIZE = 32
MAX_AUDIT_PAGE = 1000


def _hex(f: Fields, key: str, size: int, *, required: bool) -> bytes | None:
    text = f.string(key, max_length=2 * size) if required else f.opt_string(key, max_length=256)
    if text is None:
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise f.error(key, "not hexadecimal") from None
    if len(value) != size:
        raise f.error(key, f"must be {size} bytes ({2 * size} hex digits)")
    return value


class _Admin:
    def __init__(self, service: AttestationService) -> None:
        self.service = service
        self.store = service.store

    def authorize(
        self, method: str, target: str, body: bytes, auth: str | None, client: str
    ) -> str:
        config = self.service.config
        try:
            kid = verify_operator_request(
                auth,
                method=method,
                target=target,
                body=body,
                operator_keys=config.operator_keys,
                now=self.service.now(),
                max_lifetime=config.admin_token_max_lifetime,
                skew=config.clock_skew,
                use_jti=lambda jti, exp: self.store.use_jti(
                    jti, exp, self.service.now().timestamp()
                ),
            )
        except ProblemError as problem:
            self.service.audit(
                "admin.unauthorized",
                "refused",
                client,
                method=method,
                path=target,
                reason=problem.detail,
            )
            raise
        return f"operator:{kid}"

    # -- reference values ------------------------------------------------------------

    def list_values(self, actor: str, body: bytes, params: dict[str, str]) -> Any:
        now = self.service.now().timestamp()
        return {"reference_values": [r.to_json(now) for r in self.store.reference_values()]}

    def register(self, actor: str, body: bytes, params: dict[str, str]) -> Any:
        f = Fields(
            parse_json_object(body),
            "",
            ("measurement", "host_data", "launch_config", "label", "expires_at"),
        )
        measurement = _hex(f, "measurement", 48, required=True)
        assert measurement is not None
        host_data = _hex(f, "host_data", 32, required=False)
        launch_text = f.opt_string("launch_config", max_length=32768)
        if launch_text is not None:
            try:
                config = LaunchConfiguration.from_toml(launch_text)
                digest = config.digest()
            except PolicyError as exc:
                raise ProblemError(422, "invalid-policy", f"launch_config: {exc}") from None
            if host_data is not None and host_data != digest:
                raise f.error("host_data", "is not the digest of launch_config", 422)
            host_data = digest
            launch_text = config.to_toml()
        label = f.string("label", max_length=256)
        now = self.service.now().timestamp()
        expires = f.opt_integer("expires_at", minimum=0, maximum=2**53 - 1)
        if expires is not None and expires <= now:
            raise f.error("expires_at", "is not in the future", 422)
        try:
            ReferenceValue(measurement=measurement, label=label, host_data=host_data)
        except PolicyError as exc:
            raise ProblemError(422, "invalid-reference-value", str(exc)) from None
        reg = self.store.add_reference_value(
            measurement=measurement,
            host_data=host_data,
            launch_config=launch_text,
            label=label,
            created=now,
            expires=None if expires is None else float(expires),
        )
        self.service.audit(
            "admin.register",
            "ok",
            actor,
            id=reg.id,
            measurement=measurement.hex(),
            host_data=None if host_data is None else host_data.hex(),
            label=label,
            expires_at=expires,
        )
        return reg.to_json(now)

    def revoke(self, actor: str, body: bytes, params: dict[str, str]) -> Any:
        text = params["id"]
        if not text.isdigit() or len(text) > 18:
            raise ProblemError(400, "malformed-request", "reference value id must be an integer")
        now = self.service.now().timestamp()
        reg = self.store.revoke_reference_value(int(text), now)
        if reg is None:
            raise ProblemError(404, "not-found", f"no reference value {text}")
        self.service.audit(
            "admin.revoke", "ok", actor, id=reg.id, measurement=reg.measurement.hex()
        )
        return reg.to_json(now)

    # -- policies --------------------------------------------------------------------

    @staticmethod
    def _kind(params: dict[str, str]) -> str:
        kind = policy_kind(params["kind"])
        if kind is None:
            raise ProblemError(
                404,
                "not-found",
                f"no policy kind {params['kind']!r}; expected one of {', '.join(POLICY_KINDS)}",
            )
        return kind

    def get_policy(self, actor: str, body: bytes, params: dict[str, str]) -> Any:
        kind = self._kind(params)
        document = self.service.policies.get(kind)
        return {
            "kind": kind,
            "digest": document.digest_hex(),
            "default": self.service.policies.is_default(kind),
            "document": document.to_toml(),
        }

    def set_policy(self, actor: str, body: bytes, params: dict[str, str]) -> Any:
        return self.service.set_policy(self._kind(params), body, actor)

    # -- resources -------------------------------------------------------------------

    @staticmethod
    def _name(params: dict[str, str]) -> str:
        name = params["name"]
        if not RESOURCE_NAME.fullmatch(name):
            raise ProblemError(
                400, "malformed-request", f"bad resource name: {RESOURCE_NAME.pattern}"
            )
        return name

    def _value(self, body: bytes, *, required: bool) -> bytes:
        if not body.strip() and not required:
            return os.urandom(ROTATE_SIZE)
        f = Fields(parse_json_object(body), "", ("value",))
        try:
            value = b64url_decode(
                f.string("value", max_length=MAX_SECRET * 2), "value", max_size=MAX_SECRET
            )
        except MalformedError as exc:
            raise f.error("value", str(exc)) from None
        if not value:
            raise f.error("value", "must not be empty")
        return value

    def _store_value(self, actor: str, event: str, name: str, value: bytes) -> Any:
        nonce = os.urandom(12)
        now = self.service.now().timestamp()
        master = self.service.master_key
        stored = self.store.add_resource_version(
            name, nonce, lambda version: master.encrypt(name, version, nonce, value), now
        )
        self.service.audit(
            event, "ok", actor, resource=name, version=stored.version, size=len(value)
        )
        return {"name": name, "version": stored.version}

    def put_resource(self, actor: str, body: bytes, params: dict[str, str]) -> Any:
        name = self._name(params)
        return self._store_value(
            actor, "admin.resource.put", name, self._value(body, required=True)
        )

    def rotate_resource(self, actor: str, body: bytes, params: dict[str, str]) -> Any:
        name = self._name(params)
        if self.store.latest_resource(name) is None:
            raise ProblemError(404, "unknown-resource", f"no resource named {name!r}")
        value = self._value(body, required=False)
        return self._store_value(actor, "admin.resource.rotate", name, value)

    def list_resources(self, actor: str, body: bytes, params: dict[str, str]) -> Any:
        return {
            "resources": [
                {"name": n, "version": v, "updated": c} for n, v, c in self.store.resources()
            ]
        }

    # -- audit and keys --------------------------------------------------------------

    def audit(self, actor: str, body: bytes, params: dict[str, str]) -> Any:
        def number(key: str, default: int, maximum: int) -> int:
            text = params.get(key)
            if text is None:
                return default
            if not text.isdigit() or len(text) > 18 or int(text) > maximum:
                raise ProblemError(
                    400, "malformed-request", f"{key} must be an integer 0..{maximum}"
                )
            return int(text)

        after = number("after", 0, 2**62)
        limit = number("limit", 100, MAX_AUDIT_PAGE)
        intact, count = self.store.verify_audit_chain()
        entries = self.store.audit_entries(after, limit)
        return {
            "entries": [e.to_json() for e in entries],
            "chain_intact": intact,
            "count": count,
        }

    def list_keys(self, actor: str, body: bytes, params: dict[str, str]) -> Any:
        return {
            "keys": [
                {"kid": kid, "created": created, "retired": retired}
                for kid, created, retired in self.store.signing_keys()
            ]
        }

    def rotate_key(self, actor: str, body: bytes, params: dict[str, str]) -> Any:
        kid = self.service.signing_keys.rotate()
        self.service.audit("admin.signing-key.rotate", "ok", actor, kid=kid)
        return {"kid": kid}


Handler = Callable[[str, bytes, dict[str, str]], Any]


def admin_routes(service: AttestationService) -> list[Route]:
    admin = _Admin(service)

    def endpoint(handler: Handler, status: int = 200) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            body = await request.body()
            raw_path = request.scope.get("raw_path") or request.url.path.encode()
            target = raw_path.decode("latin-1")
            query = request.scope.get("query_string", b"")
            if query:
                target += "?" + query.decode("latin-1")
            params = {**request.query_params, **request.path_params}

            def call() -> Any:
                actor = admin.authorize(
                    request.method,
                    target,
                    body,
                    request.headers.get("authorization"),
                    _client(request),
                )
                return handler(actor, body, params)

            doc = await _run(call)
            return JSONResponse(doc, status_code=status, headers={"Cache-Control": "no-store"})

        return run

    p = "/v1/admin"
    return [
        Route(f"{p}/reference-values", endpoint(admin.list_values), methods=["GET"]),
        Route(f"{p}/reference-values", endpoint(admin.register, 201), methods=["POST"]),
        Route(f"{p}/reference-values/{{id}}", endpoint(admin.revoke), methods=["DELETE"]),
        Route(f"{p}/policies/{{kind}}", endpoint(admin.get_policy), methods=["GET"]),
        Route(f"{p}/policies/{{kind}}", endpoint(admin.set_policy), methods=["PUT"]),
        Route(f"{p}/resources", endpoint(admin.list_resources), methods=["GET"]),
        Route(f"{p}/resources/{{name}}", endpoint(admin.put_resource), methods=["PUT"]),
        Route(f"{p}/resources/{{name}}/rotate", endpoint(admin.rotate_resource), methods=["POST"]),
        Route(f"{p}/audit", endpoint(admin.audit), methods=["GET"]),
        Route(f"{p}/signing-keys", endpoint(admin.list_keys), methods=["GET"]),
        Route(f"{p}/signing-keys/rotate", endpoint(admin.rotate_key), methods=["POST"]),
    ]
