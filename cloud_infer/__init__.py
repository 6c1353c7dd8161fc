"""PMC2 cloud inference: neural decoder + target classifier behind an authenticated API.

The untrusted cloud receives only neural bit-strings of perturbed images from attested
enclaves (authenticated by the credential the key broker releases to them as resource
``cloud-credential``), decodes them with the bundle's codec, classifies them with the
unmodified target model, and answers with labels and top-k scores. Wire format and
endpoints: docs/cloud_api.md.

Service::

    app = create_app(CloudConfig(bundle_dir, CredentialSet.from_file(path)))

Enclave side (no torch needed)::

    body = ClassifyRequest.batch("pmc2-fp-128-192/v2", stream, count, top_k=3).to_bytes()
    ...POST body to /v1/classify with Authorization: Bearer <credential>...
    answer = ClassifyResponse.from_bytes(response_body, expected_count=count)
"""

from cloud_infer._app import PROBLEM_TYPE_PREFIX, create_app
from cloud_infer._config import (
    CREDENTIAL_PATTERN,
    DEFAULT_PORT,
    BatchingOptions,
    CloudConfig,
    CloudLimits,
    ConfigError,
    CredentialSet,
    credential_digest,
    generate_credential,
)
from cloud_infer._engine import InferenceEngine, codec_id_for
from cloud_infer._wire import (
    MEDIA_TYPE,
    ClassifyRequest,
    ClassifyResponse,
    Form,
    ImageResult,
    ScoredLabel,
    WireError,
)

__all__: list[str] = [
    "CREDENTIAL_PATTERN",
    "DEFAULT_PORT",
    "MEDIA_TYPE",
    "PROBLEM_TYPE_PREFIX",
    "BatchingOptions",
    "ClassifyRequest",
    "ClassifyResponse",
    "CloudConfig",
    "CloudLimits",
    "ConfigError",
    "CredentialSet",
    "Form",
    "ImageResult",
    "InferenceEngine",
    "ScoredLabel",
    "WireError",
    "codec_id_for",
    "create_app",
    "credential_digest",
    "generate_credential",
]
