"""Configuration of the enclave app (``EnclaveConfig``) and its retry policy."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from attestation import ReportProvider
from enclave_app._batcher import BatchConfig
from enclave_app._image import DEFAULT_IMAGE_LIMITS, ImageLimits
from policies import EgressPolicy, LaunchConfiguration
from sealed import DEFAULT_LIMITS, DEFAULT_SUITE, HpkeSuite, Limits

__all__ = ["CLASSIFY_PATH", "EnclaveConfig", "RetryPolicy"]

CLASSIFY_PATH = "/v1/classify"
"""The cloud inference endpoint, appended to the launch configuration's cloud peer."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off for calls to the attestation service.

    Attempt ``n`` (from 0) that fails with the service unavailable waits
    ``min(max_delay, initial * factor**n)``, scaled by a random factor in
    ``[1 - jitter, 1 + jitter]``, then tries again; after ``attempts`` attempts the step
    fails. Refusals (4xx) are never retried.
    """

    attempts: int = 8
    initial: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial < 0 or self.factor < 1 or self.max_delay < 0:
            raise ValueError("bad back-off parameters")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        base = min(self.max_delay, self.initial * self.factor**attempt)
        return base * (1 + self.jitter * (2 * rng() - 1))


@dataclass(frozen=True)
class EnclaveConfig:
    """Everything the enclave app needs to boot and serve.

    Required: the complete ``launch_config`` (its digest is this enclave's HOST_DATA) and
    the ``egress_policy`` it names, the ``encrypted_bundle`` file and the report
    ``provider`` (``ConfigfsTsmProvider``, ``SevGuestDeviceProvider`` or, in
    development, a ``SimulatedProvider`` launched with this HOST_DATA).

    The peers come from the launch configuration: the attestation service at
    ``peers.attestation_service`` and cloud inference at ``peers.cloud_inference`` +
    :data:`CLASSIFY_PATH`. ``attestation_transport`` / ``attestation_http`` and
    ``cloud_transport`` replace the network (tests); ``clock`` and ``sleep`` replace time.
    """

    launch_config: LaunchConfiguration
    egress_policy: EgressPolicy
    encrypted_bundle: Path
    provider: ReportProvider
    suite: HpkeSuite = DEFAULT_SUITE
    vmpl: int = 0
    input_size: int = 32
    batch_form: bool = True
    batching: BatchConfig = field(default_factory=BatchConfig)
    image_limits: ImageLimits = DEFAULT_IMAGE_LIMITS
    sealed_limits: Limits = DEFAULT_LIMITS
    cloud_top_k: int = 10
    cloud_timeout: float = 10.0
    egress_rate_wait: float = 1.0
    request_timeout: float = 30.0
    attestation_timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    refresh_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=1_000_000, initial=1.0, max_delay=60.0)
    )
    refresh_fraction: float = 0.2
    refresh_min_margin: float = 30.0
    token_leeway: float = 5.0
    pinned_jwks: dict[str, object] | None = None
    issuer: str | None = None
    bundle_workdir: Path | None = None
    attestation_transport: httpx.BaseTransport | None = field(default=None, repr=False)
    attestation_http: httpx.Client | None = field(default=None, repr=False)
    cloud_transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False)
    clock: Callable[[], dt.datetime] = _utcnow
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        object.__setattr__(self, "encrypted_bundle", Path(self.encrypted_bundle))
        if not 16 <= self.input_size <= 1024 or self.input_size % 16:
            raise ValueError("input_size must be a multiple of 16 in 16..1024")
        if not 1 <= self.cloud_top_k <= 100:
            raise ValueError("cloud_top_k must be 1..100")
        if not 0 < self.refresh_fraction < 0.5:
            raise ValueError("refresh_fraction must be in (0, 0.5)")
        for name in ("cloud_timeout", "request_timeout", "attestation_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def attestation_url(self) -> str:
        return str(self.launch_config.peers.attestation_service).rstrip("/")

    @property
    def classify_url(self) -> str:
        return str(self.launch_config.peers.cloud_inference).rstrip("/") + CLASSIFY_PATH
