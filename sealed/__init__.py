"""PMC2 sealed-request protocol, shared by the client SDK and the enclave app.

A client that has verified the enclave's attestation seals a JPEG and its options to the
enclave's HPKE public key (RFC 9180 base mode; X25519 by default, the ML-KEM-768 + X25519
hybrid selectable) together with a fresh response key; the enclave opens the request and
seals its answer under that response key. The gateway in between only sees the framing
(version, suite, key id) and sizes. The wire format is specified in docs/protocol.md.

Client::

    sealed = seal_request(public_key, jpeg, RequestOptions(top_k=3))
    ...POST sealed.envelope to /v1/infer...
    answer = sealed.open_response(body)      # InferenceResult | InferenceFailure

Enclave::

    opened = open_request(envelope, key_pair)   # OpenedRequest (jpeg, options)
    return opened.seal_response(InferenceResult(...))
"""

from sealed._envelope import (
    DEFAULT_LIMITS,
    MAGIC,
    VERSION,
    Limits,
    RequestHeader,
    peek_request_header,
)
from sealed._errors import (
    PROBLEM_TYPE_PREFIX,
    DecryptionError,
    MalformedError,
    OversizedError,
    SealedError,
    UnknownKeyError,
    UnsupportedSuiteError,
    UnsupportedVersionError,
    WrongSuiteError,
)
from sealed._keys import EnclaveKeyPair, EnclavePublicKey, InsecureKeyExportWarning, KeyId
from sealed._messages import (
    MAX_BATCH_IMAGES,
    MAX_TOP_K,
    BitstringSizes,
    InferenceFailure,
    InferenceResponse,
    InferenceResult,
    RequestOptions,
    ScoredLabel,
)
from sealed._protocol import (
    DEFAULT_REQUEST_PADDING,
    DEFAULT_RESPONSE_PADDING,
    OpenedRequest,
    SealedRequest,
    open_request,
    open_response,
    seal_request,
    seal_response,
)
from sealed._suites import (
    DEFAULT_SUITE,
    SUITE_MLKEM768_X25519,
    SUITE_X25519,
    SUPPORTED_SUITES,
    AeadId,
    HpkeSuite,
    KdfId,
    KemId,
)

__all__: list[str] = [
    "DEFAULT_LIMITS",
    "DEFAULT_REQUEST_PADDING",
    "DEFAULT_RESPONSE_PADDING",
    "DEFAULT_SUITE",
    "MAGIC",
    "MAX_BATCH_IMAGES",
    "MAX_TOP_K",
    "PROBLEM_TYPE_PREFIX",
    "SUITE_MLKEM768_X25519",
    "SUITE_X25519",
    "SUPPORTED_SUITES",
    "VERSION",
    "AeadId",
    "BitstringSizes",
    "DecryptionError",
    "EnclaveKeyPair",
    "EnclavePublicKey",
    "HpkeSuite",
    "InferenceFailure",
    "InferenceResponse",
    "InferenceResult",
    "InsecureKeyExportWarning",
    "KdfId",
    "KemId",
    "KeyId",
    "Limits",
    "MalformedError",
    "OpenedRequest",
    "OversizedError",
    "RequestHeader",
    "RequestOptions",
    "ScoredLabel",
    "SealedError",
    "SealedRequest",
    "UnknownKeyError",
    "UnsupportedSuiteError",
    "UnsupportedVersionError",
    "WrongSuiteError",
    "open_request",
    "open_response",
    "peek_request_header",
    "seal_request",
    "seal_response",
]
