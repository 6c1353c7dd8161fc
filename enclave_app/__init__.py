"""PMC2 enclave app: boot (attest, key release, bundle decryption), sealed-request
handling, perturb + encode with dynamic batching, and the egress guard.

Boot and serve::

    config = EnclaveConfig(launch_config, egress_policy, encrypted_bundle, provider)
    enclave = Enclave(boot(config))          # BootError names the failed step and why
    app = create_app(enclave)                # the replica's internal HTTP API (starlette)

Operator, before launch: ``seal_bundle(bundle_dir, key)`` (``pmc2 enclave seal-bundle``)
encrypts the model bundle; the key goes to the attestation service as the resource
``model-bundle-key``. See docs/enclave.md.
"""

from enclave_app._batcher import BatchConfig, BatchStats, DynamicBatcher, OverloadedError
from enclave_app._boot import BOOT_STEPS, Booted, BootError, BootStep, boot
from enclave_app._bundlecrypt import (
    BUNDLE_KEY_SIZE,
    ENCRYPTED_BUNDLE_MAGIC,
    BundleCryptError,
    DecryptedBundle,
    bundle_key_check,
    generate_bundle_key,
    open_bundle,
    seal_bundle,
)
from enclave_app._config import CLASSIFY_PATH, EnclaveConfig, RetryPolicy
from enclave_app._egress import (
    EgressDeniedError,
    EgressGuard,
    EgressRecord,
    EgressStats,
    TokenBucket,
    UpstreamError,
)
from enclave_app._enclave import Enclave, EnclaveNotReadyError
from enclave_app._engine import EncodedBatch, VisionEngine, codec_id_for
from enclave_app._http import PROBLEM_TYPE_PREFIX, create_app
from enclave_app._image import DEFAULT_IMAGE_LIMITS, ImageError, ImageLimits, decode_jpeg

__all__: list[str] = [
    "BOOT_STEPS",
    "BUNDLE_KEY_SIZE",
    "CLASSIFY_PATH",
    "DEFAULT_IMAGE_LIMITS",
    "ENCRYPTED_BUNDLE_MAGIC",
    "PROBLEM_TYPE_PREFIX",
    "BatchConfig",
    "BatchStats",
    "BootError",
    "BootStep",
    "Booted",
    "BundleCryptError",
    "DecryptedBundle",
    "DynamicBatcher",
    "EgressDeniedError",
    "EgressGuard",
    "EgressRecord",
    "EgressStats",
    "Enclave",
    "EnclaveConfig",
    "EnclaveNotReadyError",
    "EncodedBatch",
    "ImageError",
    "ImageLimits",
    "OverloadedError",
    "RetryPolicy",
    "TokenBucket",
    "UpstreamError",
    "VisionEngine",
    "boot",
    "bundle_key_check",
    "codec_id_for",
    "create_app",
    "decode_jpeg",
    "generate_bundle_key",
    "open_bundle",
    "seal_bundle",
]
