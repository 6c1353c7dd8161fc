"""PMC2 gateway: the untrusted front door of the enclave replicas.

It publishes the replicas' attestation tokens (``GET /v1/attestation``), forwards sealed
request envelopes to the replica holding the addressed key (``POST /v1/infer``) and
returns the sealed answers, with body limits, per-client rate limits, timeouts and
back-pressure. It holds no key and reads only an envelope's clear-text framing. HTTP
API: docs/gateway_api.md and ``GET /openapi.json``. Nothing imports the gateway.

    app = create_app(GatewayConfig(replicas=("http://10.0.0.5:8403",)))
"""

from gateway._app import ROUTES, create_app
from gateway._config import ConfigError, GatewayConfig, RateLimit, api_key_digest
from gateway._middleware import (
    ACCESS_LOGGER,
    AccessLogMiddleware,
    BodyLimitMiddleware,
    TimeoutMiddleware,
)
from gateway._openapi import openapi_document
from gateway._problems import PROBLEM_TYPE_PREFIX
from gateway._registry import ReplicaAttestation

__all__: list[str] = [
    "ACCESS_LOGGER",
    "PROBLEM_TYPE_PREFIX",
    "ROUTES",
    "AccessLogMiddleware",
    "BodyLimitMiddleware",
    "ConfigError",
    "GatewayConfig",
    "RateLimit",
    "ReplicaAttestation",
    "TimeoutMiddleware",
    "api_key_digest",
    "create_app",
    "openapi_document",
]
