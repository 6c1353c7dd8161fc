"""The attestation service and key broker (private; the public names are re-exported by
``attestation``). Modules:

- ``_binding``: REPORT_DATA = hash of the canonical runtime data (nonce, public key);
- ``_config``: ``ServiceConfig``;
- ``_store``: SQLite state (nonces, reference values, policies, resources, keys, audit);
- ``_keys``: token-signing keys (rotation, JWKS) and the master key for resources;
- ``_tokens``: attestation-result tokens (EAR claims, ES384) and their verification;
- ``_appraiser``: evidence verification and appraisal (checklist E1-E6);
- ``_operator``: operator-signed admin requests (Ed25519 JWTs, checklist O1-O6);
- ``_app`` / ``_admin``: the starlette application (``create_app``);
- ``_middleware``: body limit, timeout, access log (pure ASGI);
- ``_release``: released secrets as JWE (ECDH-ES X25519 + A256GCM);
- ``_client``: ``AttestationClient`` (enclave side), ``AdminClient`` (operator side);
- ``_bench``: ``pmc2 bench attest``.
"""

from attestation._service._app import AttestationService, create_app
from attestation._service._binding import NONCE_SIZE, runtime_data, runtime_data_hash
from attestation._service._client import (
    AdminClient,
    AttestationClient,
    generate_operator_key,
    load_operator_private_key,
)
from attestation._service._config import (
    InsecureRootsWarning,
    ServiceConfig,
    load_operator_public_key,
)
from attestation._service._errors import (
    ServiceRefusedError,
    ServiceUnavailableError,
    TokenError,
)
from attestation._service._operator import operator_key_id, operator_token
from attestation._service._release import open_released_secret
from attestation._service._tokens import (
    EAT_PROFILE,
    AttestationResult,
    verify_attestation_token,
)

__all__ = [
    "EAT_PROFILE",
    "NONCE_SIZE",
    "AdminClient",
    "AttestationClient",
    "AttestationResult",
    "AttestationService",
    "InsecureRootsWarning",
    "ServiceConfig",
    "ServiceRefusedError",
    "ServiceUnavailableError",
    "TokenError",
    "create_app",
    "generate_operator_key",
    "load_operator_private_key",
    "load_operator_public_key",
    "open_released_secret",
    "operator_key_id",
    "operator_token",
    "runtime_data",
    "runtime_data_hash",
    "verify_attestation_token",
]
