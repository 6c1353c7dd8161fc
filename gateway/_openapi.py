"""The gateway's OpenAPI 3.1 document (served at ``GET /openapi.json``).

Kept next to the routes; the tests check that it documents exactly the public routes
(``gateway._app.ROUTES``) and that every status a route can answer is listed.
"""

from __future__ import annotations

import copy
from typing import Any

from gateway._config import GatewayConfig

__all__ = ["openapi_document"]


def _problem(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if retry_after:
        out["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return out


_RATE_LIMITED = _problem("Rate limit of this client exceeded.", retry_after=True)
_UNKNOWN_API_KEY = _problem("An API key was presented that the gateway does not accept.")
_NO_REPLICA = _problem(
    "No attested replica is available, or all are at their in-flight limit.", retry_after=True
)
_REQUEST_ID = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "PMC2 gateway",
        "version": "1",
        "summary": "Untrusted front door of the PMC2 confidential-inference enclaves.",
        "description": (
            "The gateway routes sealed requests (docs/protocol.md) to the enclave replica "
            "holding the addressed HPKE key, and publishes the replicas' attestation-result "
            "tokens. It holds no key and can read nothing but the envelope's clear-text "
            "framing (version, suite, key id) and sizes. Errors are RFC 7807 problem "
            "documents. Every answer carries an X-Request-Id header."
        ),
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    },
    "paths": {
        "/v1/attestation": {
            "get": {
                "operationId": "getAttestation",
                "summary": "The replicas' attestation tokens, or fresh evidence for a nonce",
                "description": (
                    "Without `nonce`: the current attestation-result token, key id and public "
                    "JWK of every attested replica (one entry per key id); with `key_id`, only "
                    "that key's. With `nonce`: fresh evidence from one replica (the one "
                    "holding `key_id` when given), bound to the client's nonce, to verify "
                    "at the attestation service (`POST /v1/verify`)."
                ),
                "parameters": [
                    {
                        "name": "nonce",
                        "in": "query",
                        "required": False,
                        "description": "16 to 64 random bytes, unpadded canonical base64url.",
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22,86}$"},
                    },
                    {
                        "name": "key_id",
                        "in": "query",
                        "required": False,
                        "description": "Restrict to the replica holding this key id.",
                        "schema": {"$ref": "#/components/schemas/KeyId"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "Tokens (no nonce) or evidence (with nonce).",
                        "headers": _REQUEST_ID,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Attestations"},
                                        {"$ref": "#/components/schemas/Evidence"},
                                    ]
                                }
                            }
                        },
                    },
                    "400": _problem("Bad nonce, key id or query parameters."),
                    "401": _UNKNOWN_API_KEY,
                    "413": _problem("A request body was sent and is too large."),
                    "421": _problem(
                        "No replica holds `key_id`; the problem lists `current_key_ids`."
                    ),
                    "429": _RATE_LIMITED,
                    "502": _problem("The replica's answer was unusable or it is unreachable."),
                    "503": _NO_REPLICA,
                    "504": _problem("The replica did not answer in time."),
                },
            }
        },
        "/v1/infer": {
            "post": {
                "operationId": "infer",
                "summary": "Send a sealed request envelope, receive the sealed answer",
                "description": (
                    "The body is a version-1 request envelope (docs/protocol.md section 4). "
                    "The gateway routes it by its key id and returns the enclave's response "
                    "envelope (section 5) unchanged. Errors found before the enclave opened "
                    "the envelope are clear-text problem documents with types "
                    "`urn:pmc2:sealed:*` (framing, key) or `urn:pmc2:gateway:*` (limits, "
                    "routing); failures after opening are sealed answers (status 200)."
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {
                                "type": "string",
                                "contentMediaType": "application/octet-stream",
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The sealed response envelope.",
                        "headers": _REQUEST_ID,
                        "content": {
                            "application/octet-stream": {
                                "schema": {
                                    "type": "string",
                                    "contentMediaType": "application/octet-stream",
                                }
                            }
                        },
                    },
                    "400": _problem(
                        "Malformed envelope, unsupported version or suite, wrong suite, "
                        "decryption failed, or a bad Content-Length."
                    ),
                    "401": _UNKNOWN_API_KEY,
                    "413": _problem(
                        "The envelope exceeds the size limit (`urn:pmc2:sealed:oversized`)."
                    ),
                    "415": _problem("The body is not application/octet-stream."),
                    "421": _problem(
                        "No replica holds the envelope's key id "
                        "(`urn:pmc2:sealed:unknown-key` with `current_key_id` and "
                        "`current_key_ids`): fetch /v1/attestation, verify, re-seal."
                    ),
                    "422": _problem("The enclave refused the request (passed through)."),
                    "429": _RATE_LIMITED,
                    "502": _problem("The replica is unreachable or answered unusably."),
                    "503": _NO_REPLICA,
                    "504": _problem("The replica did not answer in time."),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness and replica availability",
                "responses": {
                    "200": {
                        "description": "At least one replica is attested.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                        },
                    },
                    "503": {
                        "description": "No replica is attested.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                        },
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format 0.0.4)",
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
    "components": {
        "headers": {
            "RetryAfter": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 1},
            },
            "RequestId": {
                "description": "The gateway's id of this request (also in its access log).",
                "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            },
        },
        "securitySchemes": {
            "apiKey": {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": (
                    "Optional. When the operator configured API keys, a known key selects "
                    "a per-key rate limit; an unknown one is refused (401). Without it, "
                    "requests are rate-limited per client address."
                ),
            }
        },
        "schemas": {
            "KeyId": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "Problem": {
                "type": "object",
                "description": "RFC 7807 problem document.",
                "required": ["type", "title", "status"],
                "properties": {
                    "type": {"type": "string", "format": "uri"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "key_id": {"$ref": "#/components/schemas/KeyId"},
                    "current_key_id": {"$ref": "#/components/schemas/KeyId"},
                    "current_key_ids": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/KeyId"},
                    },
                },
            },
            "Attestation": {
                "type": "object",
                "required": ["key_id", "token", "public_key_jwk"],
                "additionalProperties": False,
                "properties": {
                    "key_id": {"$ref": "#/components/schemas/KeyId"},
                    "token": {
                        "type": "string",
                        "description": (
                            "Attestation-result JWT (ES384) from the attestation service."
                        ),
                    },
                    "public_key_jwk": {
                        "type": "object",
                        "description": "The enclave's HPKE public key (docs/protocol.md 3.4).",
                        "additionalProperties": {"type": "string"},
                    },
                },
            },
            "Attestations": {
                "type": "object",
                "required": ["attestations"],
                "additionalProperties": False,
                "properties": {
                    "attestations": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/components/schemas/Attestation"},
                    }
                },
            },
            "Evidence": {
                "type": "object",
                "required": ["key_id", "nonce", "evidence"],
                "properties": {
                    "key_id": {"$ref": "#/components/schemas/KeyId"},
                    "nonce": {"type": "string"},
                    "evidence": {
                        "type": "object",
                        "description": (
                            "Opaque to the gateway: the replica's SNP report bound to the "
                            "nonce and its key, with certificates (docs/gateway_api.md 4.2)."
                        ),
                    },
                },
            },
            "Health": {
                "type": "object",
                "required": ["status", "replicas", "attested", "key_ids"],
                "properties": {
                    "status": {"enum": ["ok", "unavailable"]},
                    "replicas": {"type": "integer"},
                    "attested": {"type": "integer"},
                    "key_ids": {"type": "array", "items": {"$ref": "#/components/schemas/KeyId"}},
                },
            },
        },
    },
    "security": [{}, {"apiKey": []}],
}


def openapi_document(config: GatewayConfig) -> dict[str, Any]:
    """The document, with the configured limits filled into the descriptions."""
    document = copy.deepcopy(_DOCUMENT)
    infer = document["paths"]["/v1/infer"]["post"]
    infer["requestBody"]["description"] = (
        f"A sealed request envelope of at most {config.max_envelope_bytes} bytes."
    )
    document["components"]["securitySchemes"]["apiKey"]["name"] = config.api_key_header
    return document
