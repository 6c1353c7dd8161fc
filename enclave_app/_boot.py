"""Boot: from launch configuration to a serving enclave, or a refusal that says why.

:func:`boot` runs these steps in order; the first that fails raises :class:`BootError`
naming the step and the reason, and nothing is served (DESIGN.md, Trust bootstrap):

1. **Configuration.** The launch configuration is complete (not a template); the egress
   policy is the one it names (digest) and allows its cloud peer; the key suite is
   HPKE-3 (key release is a JWE ECDH-ES to an X25519 key); the model-bundle digest is a
   ``sha384:`` manifest digest; the encrypted bundle is readable.
2. **Key pair.** A fresh HPKE key pair from the OS CSPRNG (``EnclaveKeyPair.generate``);
   the private key never leaves the process.
3. **Nonce.** ``POST /v1/challenge`` at the attestation service.
4. **Report.** REPORT_DATA = ``runtime_data_hash(nonce, public key)`` (the canonical
   runtime data, ``attestation._service._binding``); the configured provider
   (configfs-tsm, /dev/sev-guest, or the simulated platform) signs a report over it.
   The enclave checks its own report first: REPORT_DATA is what it asked for, and
   HOST_DATA equals the digest of the launch configuration it was given (as
   Confidential Containers' init-data: a configuration that does not hash to HOST_DATA
   is not used).
5. **Attestation.** ``POST /v1/attest`` → the attestation-result token, verified against
   the service's JWKS (pinned when configured): signature, expiry, ``cnf`` = this
   enclave's key; and its HOST_DATA claim must be this launch configuration's digest.
6. **Model-bundle key.** ``GET /v1/resource/model-bundle-key`` with the token; the JWE
   is decrypted with the enclave's X25519 key; 32 bytes.
7. **Cloud credential.** ``GET /v1/resource/cloud-credential``; an RFC 6750 b64token.
8. **Bundle.** The encrypted bundle is opened (``_bundlecrypt``: key check, the header's
   manifest digest = the launch configuration's ``model_bundle_digest``, AES-256-GCM,
   archive, manifest digest and every file's SHA-256).
9. **Models.** Generator and codec are loaded (``vision.load_bundle`` with the pinned
   digest; no pickle); the codec's identifier must be the egress policy's; a warm-up
   batch is perturbed, encoded and checked by the egress guard (G1-G4; nothing is sent).

Steps 3 to 7 talk to the attestation service. When it is unavailable (unreachable,
timeout, 5xx) the step is retried with exponential back-off (``EnclaveConfig.retry``,
injected ``sleep``); because a nonce is single use, a failed attestation restarts at
step 3. A refusal (4xx: appraisal failed, release denied) is final.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from attestation import (
    AttestationClient,
    AttestationError,
    AttestationReport,
    AttestationResult,
    ProviderError,
    ServiceRefusedError,
    ServiceUnavailableError,
    runtime_data_hash,
)
from cloud_infer import CREDENTIAL_PATTERN
from enclave_app._bundlecrypt import BundleCryptError, DecryptedBundle, open_bundle
from enclave_app._config import EnclaveConfig
from enclave_app._egress import EgressGuard
from enclave_app._engine import VisionEngine, codec_id_for
from policies import PolicyError
from sealed import SUITE_X25519, EnclaveKeyPair

__all__ = [
    "BOOT_STEPS",
    "BootError",
    "BootStep",
    "attest_with_retry",
    "boot",
    "make_attestation_client",
]

BOOT_STEPS: dict[int, str] = {
    1: "check the launch configuration",
    2: "generate the HPKE key pair",
    3: "get a nonce from the attestation service",
    4: "obtain a report bound to the nonce and key",
    5: "attest and verify the token",
    6: "release the model-bundle key",
    7: "release the cloud credential",
    8: "decrypt and check the model bundle",
    9: "load the generator and codec encoder",
}
MODEL_BUNDLE_KEY = "model-bundle-key"
CLOUD_CREDENTIAL = "cloud-credential"
_T = TypeVar("_T")
_SHM = Path("/dev/shm")  # noqa: S108 - memory-backed; a private mkdtemp inside it
"""Where decrypted weights are written briefly for ``vision.load_bundle``: tmpfs, i.e.
guest memory, which SEV-SNP encrypts; the directory is private (0700) and removed after
loading."""


class BootError(Exception):
    """Boot step ``step`` failed; the enclave does not serve. ``reason`` says why."""

    def __init__(self, step: int, reason: str, *, unavailable: bool = False) -> None:
        self.step = step
        self.name = BOOT_STEPS.get(step, "boot")
        self.reason = reason
        self.unavailable = unavailable
        """True when the attestation service was unavailable (not a refusal)."""
        super().__init__(f"boot step {step} ({self.name}) failed: {reason}")


@dataclass(frozen=True)
class BootStep:
    """A completed boot step (for progress output)."""

    step: int
    name: str
    seconds: float
    detail: str = ""


Progress = Callable[[BootStep], None]


def make_attestation_client(config: EnclaveConfig) -> AttestationClient:
    """The enclave's client of the attestation service (network and clock from config)."""
    return AttestationClient(
        config.attestation_url,
        transport=config.attestation_transport,
        timeout=config.attestation_timeout,
        jwks=config.pinned_jwks,
        issuer=config.issuer,
        clock=config.clock,
        http=config.attestation_http,
    )


def _with_retry(config: EnclaveConfig, step: int, call: Callable[[], _T]) -> _T:
    """``call`` with back-off while the service is unavailable (refusals are final)."""
    retry = config.retry
    for attempt in range(retry.attempts):
        try:
            return call()
        except ServiceUnavailableError as exc:
            if attempt + 1 >= retry.attempts:
                raise BootError(
                    step,
                    f"attestation service unavailable after {retry.attempts} attempts: {exc}",
                    unavailable=True,
                ) from None
            config.sleep(retry.delay(attempt, config.rng))
        except ServiceRefusedError as exc:
            raise BootError(step, f"refused by the attestation service: {exc}") from None
        except AttestationError as exc:  # TokenError and other verification failures
            raise BootError(step, str(exc)) from None
    raise AssertionError("unreachable")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _attest_once(
    config: EnclaveConfig,
    client: AttestationClient,
    key_pair: EnclaveKeyPair,
    steps: list[int],
    progress: Progress | None = None,
) -> AttestationResult:
    """Steps 3-5 once; ``steps`` records the step in progress (for errors)."""
    started = time.perf_counter()

    def done(step: int, detail: str = "") -> None:
        nonlocal started
        if progress is not None:
            progress(BootStep(step, BOOT_STEPS[step], time.perf_counter() - started, detail))
        started = time.perf_counter()

    public_key = key_pair.public_key
    steps.append(3)
    nonce = client.challenge()
    done(3)
    steps.append(4)
    expected = runtime_data_hash(nonce, public_key)
    try:
        guest = config.provider.get_report(expected, config.vmpl)
        report = AttestationReport.from_bytes(guest.report)
    except ProviderError as exc:
        raise BootError(4, f"the report provider failed: {exc}") from None
    except AttestationError as exc:
        raise BootError(4, f"the provider's report is unusable: {exc}") from None
    if report.report_data != expected:
        raise BootError(4, "the report's REPORT_DATA does not bind the nonce and key")
    host_data = config.launch_config.host_data()
    if report.host_data != host_data:
        raise BootError(
            4,
            f"HOST_DATA {report.host_data.hex()} is not the digest {host_data.hex()} of the "
            "launch configuration this enclave was given",
        )
    evidence: dict[str, str] = {"report": _b64url(guest.report)}
    if len(guest.certs):
        evidence["cert_table"] = _b64url(guest.certs.to_bytes())
    done(4, f"{guest.provider}, MEASUREMENT {report.measurement.hex()[:16]}...")
    steps.append(5)
    result = client.submit(nonce, public_key, evidence)
    if result.host_data != host_data:
        raise BootError(5, "the token's HOST_DATA is not this launch configuration's digest")
    done(5, f"token status {result.status}, expires {result.expires_at.isoformat()}")
    return result


def attest_with_retry(
    config: EnclaveConfig,
    client: AttestationClient,
    key_pair: EnclaveKeyPair,
    *,
    retry_attempts: int | None = None,
    progress: Progress | None = None,
) -> AttestationResult:
    """Steps 3-5 with back-off: a failure while the service is unavailable restarts at
    step 3 (a nonce is single use). Raises :class:`BootError`."""
    attempts = config.retry.attempts if retry_attempts is None else retry_attempts
    for attempt in range(attempts):
        steps: list[int] = []
        try:
            return _attest_once(config, client, key_pair, steps, progress)
        except ServiceUnavailableError as exc:
            if attempt + 1 >= attempts:
                raise BootError(
                    steps[-1],
                    f"attestation service unavailable after {attempts} attempts: {exc}",
                    unavailable=True,
                ) from None
            config.sleep(config.retry.delay(attempt, config.rng))
        except ServiceRefusedError as exc:
            raise BootError(steps[-1], f"refused by the attestation service: {exc}") from None
        except AttestationError as exc:
            raise BootError(steps[-1], str(exc)) from None
    raise AssertionError("unreachable")


@dataclass
class Booted:
    """What :func:`boot` produces (``Enclave`` wraps it)."""

    config: EnclaveConfig
    key_pair: EnclaveKeyPair
    client: AttestationClient
    attestation: AttestationResult
    credential: str = field(repr=False)
    engine: VisionEngine
    bundle_digest: str


def _check_configuration(config: EnclaveConfig) -> str:
    launch = config.launch_config
    if launch.is_template or launch.model_bundle_digest is None:
        raise BootError(1, "the launch configuration is a template (no model_bundle_digest)")
    problems = launch.check_egress(config.egress_policy)
    if problems:
        raise BootError(1, "; ".join(problems))
    if config.suite != SUITE_X25519:
        raise BootError(
            1, f"suite {config.suite.name}: key release needs an X25519 (HPKE-3) enclave key"
        )
    alg, _, digest = launch.model_bundle_digest.partition(":")
    if alg != "sha384":
        raise BootError(1, f"model_bundle_digest must be sha384:<manifest digest>, not {alg}:")
    if not config.encrypted_bundle.is_file():
        raise BootError(1, f"encrypted bundle {config.encrypted_bundle} is not a readable file")
    if config.batching.max_batch > config.egress_policy.max_images_per_second:
        raise BootError(
            1,
            f"max batch {config.batching.max_batch} exceeds the egress rate "
            f"{config.egress_policy.max_images_per_second} images/s (a batch could never leave)",
        )
    return digest


def _load_models(
    config: EnclaveConfig, files_digest: str, decrypted: DecryptedBundle
) -> VisionEngine:
    from vision import BundleError, load_bundle

    parent = config.bundle_workdir
    if parent is None and _SHM.is_dir():
        parent = _SHM
    workdir = Path(tempfile.mkdtemp(prefix="pmc2-bundle-", dir=parent))
    try:
        decrypted.materialize(workdir / "bundle")
        bundle = load_bundle(
            workdir / "bundle", roles=("generator", "codec"), expected_digest=files_digest
        )
    except (BundleError, BundleCryptError, OSError) as exc:
        raise BootError(9, f"cannot load the networks: {exc}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    try:
        codec_id = codec_id_for(bundle.manifest)
    except ValueError as exc:
        raise BootError(9, str(exc)) from None
    if codec_id != config.egress_policy.codec:
        raise BootError(
            9,
            f"the bundle's codec {codec_id} is not the egress policy's "
            f"{config.egress_policy.codec}",
        )
    try:
        engine = VisionEngine(
            bundle.generator,
            bundle.codec,
            codec_id=codec_id,
            input_size=config.input_size,
            batch_form=config.batch_form,
        )
    except (ValueError, StopIteration) as exc:
        raise BootError(9, f"unusable networks: {exc}") from None
    return engine


def _warm_up(config: EnclaveConfig, engine: VisionEngine) -> None:
    size = config.input_size
    count = min(2, config.batching.max_batch)
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    try:
        encoded = engine.run(images)
    except Exception as exc:  # any failure of the networks refuses the boot
        raise BootError(9, f"warm-up inference failed: {type(exc).__name__}: {exc}") from None
    guard = EgressGuard(
        policy=config.egress_policy,
        destination=config.classify_url,
        credential="warm-up-only-never-sent-anywhere-xxxxxxxx",
        latent_side=engine.latent_side,
        codec=engine.codec,
        max_batch=config.batching.max_batch,
    )
    reasons = guard.check(
        engine.codec_id, encoded.strings, encoded.count, batch_form=encoded.batch_form
    )
    if reasons:
        raise BootError(9, "the egress policy refuses this model's output: " + "; ".join(reasons))


def boot(config: EnclaveConfig, *, progress: Progress | None = None) -> Booted:
    """Run boot steps 1-9 (module docstring); raises :class:`BootError`."""

    def done(step: int, started: float, detail: str = "") -> None:
        if progress is not None:
            progress(BootStep(step, BOOT_STEPS[step], time.perf_counter() - started, detail))

    # 1.
    t = time.perf_counter()
    try:
        files_digest = _check_configuration(config)
        host_data = config.launch_config.host_data()
    except PolicyError as exc:
        raise BootError(1, str(exc)) from None
    done(1, t, f"HOST_DATA {host_data.hex()}")
    # 2.
    t = time.perf_counter()
    key_pair = EnclaveKeyPair.generate(config.suite)
    done(2, t, f"key id {key_pair.key_id.hex}")
    # 3-5.
    client = make_attestation_client(config)
    try:
        result = attest_with_retry(config, client, key_pair, progress=progress)
        # 6.
        t = time.perf_counter()
        bundle_key = _with_retry(
            config, 6, lambda: client.resource(MODEL_BUNDLE_KEY, result.token, key_pair)
        )
        if len(bundle_key) != 32:
            raise BootError(6, f"the model-bundle key is {len(bundle_key)} bytes, not 32")
        done(6, t)
        # 7.
        t = time.perf_counter()
        raw_credential = _with_retry(
            config, 7, lambda: client.resource(CLOUD_CREDENTIAL, result.token, key_pair)
        )
        try:
            credential = raw_credential.decode("ascii").strip()
        except UnicodeDecodeError:
            raise BootError(7, "the cloud credential is not ASCII") from None
        if not CREDENTIAL_PATTERN.fullmatch(credential):
            raise BootError(7, "the cloud credential is not an RFC 6750 b64token")
        done(7, t)
        # 8.
        t = time.perf_counter()
        try:
            data = config.encrypted_bundle.read_bytes()
            decrypted = open_bundle(data, bundle_key, expected_digest=files_digest)
        except OSError as exc:
            raise BootError(8, f"cannot read the encrypted bundle: {exc.strerror}") from None
        except BundleCryptError as exc:
            raise BootError(8, str(exc)) from None
        done(8, t, f"manifest sha384:{decrypted.digest}")
        # 9.
        t = time.perf_counter()
        engine = _load_models(config, files_digest, decrypted)
        _warm_up(config, engine)
        done(9, t, f"codec {engine.codec_id}, input {config.input_size}x{config.input_size}")
    except BaseException:
        client.close()
        raise
    return Booted(
        config=config,
        key_pair=key_pair,
        client=client,
        attestation=result,
        credential=credential,
        engine=engine,
        bundle_digest=decrypted.digest,
    )
