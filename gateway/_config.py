"""Gateway configuration: replicas, limits, rate limits, timeouts (docs/gateway_api.md 6)."""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from sealed import DEFAULT_LIMITS

__all__ = ["ConfigError", "GatewayConfig", "RateLimit", "api_key_digest"]

_HEADER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_API_KEY = re.compile(r"[\x21-\x7e]{16,256}")


class ConfigError(ValueError):
    """An invalid gateway configuration (the gateway refuses to start)."""


def api_key_digest(api_key: str) -> bytes:
    """SHA-256 of an API key's ASCII bytes (what the gateway stores)."""
    if not isinstance(api_key, str) or not _API_KEY.fullmatch(api_key):
        raise ConfigError("an API key is 16..256 printable ASCII characters, no spaces")
    return hashlib.sha256(api_key.encode("ascii")).digest()


def _number(value: object, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{name} must be in {low}..{high}")


def _integer(value: object, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in {low}..{high}")


def _replica_url(text: str) -> str:
    if not isinstance(text, str):
        raise ConfigError("a replica URL is a string")
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise ConfigError(f"bad replica URL {text!r}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"replica URL {text!r} must be http(s)://host[:port][/prefix]")
    if url.query or url.fragment or url.userinfo:
        raise ConfigError(f"replica URL {text!r} must not carry a query, fragment or userinfo")
    return str(url).rstrip("/")


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``rate_per_s`` tokens per second, at most ``burst`` saved up."""

    rate_per_s: float = 10.0
    burst: int = 20

    def __post_init__(self) -> None:
        _number(self.rate_per_s, "rate_per_s", 0.001, 1e6)
        _integer(self.burst, "burst", 1, 1_000_000)


@dataclass(frozen=True)
class GatewayConfig:
    """Everything :func:`gateway.create_app` needs.

    ``replicas`` are the enclave replicas' internal base URLs. ``api_keys`` (SHA-256
    digests, see :func:`api_key_digest`) enable per-key rate limits: a request carrying
    a known key in ``api_key_header`` is limited per key with ``api_key_rate_limit``;
    an unknown key is refused (401); without the header, or when no keys are configured,
    requests are limited per client IP with ``rate_limit``. ``transport`` replaces the
    network for the replica calls (tests); ``clock`` is the monotonic time source of the
    rate limiter and the attestation cache.
    """

    replicas: tuple[str, ...]
    max_envelope_bytes: int = DEFAULT_LIMITS.max_envelope_bytes
    max_response_bytes: int = DEFAULT_LIMITS.max_response_bytes
    max_evidence_bytes: int = 64 * 1024
    max_other_body_bytes: int = 4096
    rate_limit: RateLimit = field(default_factory=RateLimit)
    api_key_header: str = "x-api-key"
    api_keys: frozenset[bytes] = frozenset()
    api_key_rate_limit: RateLimit | None = None
    max_rate_limit_keys: int = 100_000
    max_in_flight_per_replica: int = 64
    upstream_timeout_s: float = 30.0
    attestation_timeout_s: float = 5.0
    request_timeout_s: float = 60.0
    attestation_ttl_s: float = 30.0
    min_refresh_interval_s: float = 1.0
    retry_after_s: int = 1
    transport: httpx.AsyncBaseTransport | None = field(default=None, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        given: object = self.replicas
        if isinstance(given, str):
            raise ConfigError("replicas is a sequence of URLs")
        replicas = tuple(_replica_url(u) for u in self.replicas)
        if not replicas:
            raise ConfigError("at least one replica is required")
        if len(set(replicas)) != len(replicas):
            raise ConfigError("duplicate replica URLs")
        object.__setattr__(self, "replicas", replicas)
        _integer(self.max_envelope_bytes, "max_envelope_bytes", 1024, 2**32 - 1)
        _integer(self.max_response_bytes, "max_response_bytes", 1024, 2**32 - 1)
        _integer(self.max_evidence_bytes, "max_evidence_bytes", 1024, 16 * 1024 * 1024)
        _integer(self.max_other_body_bytes, "max_other_body_bytes", 0, 1024 * 1024)
        if not isinstance(self.rate_limit, RateLimit):
            raise ConfigError("rate_limit must be a RateLimit")
        if self.api_key_rate_limit is not None and not isinstance(
            self.api_key_rate_limit, RateLimit
        ):
            raise ConfigError("api_key_rate_limit must be a RateLimit")
        if not isinstance(self.api_key_header, str) or not _HEADER_NAME.fullmatch(
            self.api_key_header
        ):
            raise ConfigError("api_key_header must be a lowercase header name")
        keys = frozenset(self.api_keys)
        if not all(isinstance(k, bytes) and len(k) == 32 for k in keys):
            raise ConfigError("api_keys holds 32-byte SHA-256 digests")
        object.__setattr__(self, "api_keys", keys)
        _integer(self.max_rate_limit_keys, "max_rate_limit_keys", 1, 10_000_000)
        _integer(self.max_in_flight_per_replica, "max_in_flight_per_replica", 1, 100_000)
        _number(self.upstream_timeout_s, "upstream_timeout_s", 0.001, 3600)
        _number(self.attestation_timeout_s, "attestation_timeout_s", 0.001, 3600)
        _number(self.request_timeout_s, "request_timeout_s", 0.001, 3600)
        _number(self.attestation_ttl_s, "attestation_ttl_s", 0.0, 86400)
        _number(self.min_refresh_interval_s, "min_refresh_interval_s", 0.0, 3600)
        _integer(self.retry_after_s, "retry_after_s", 1, 3600)
        if self.transport is not None and not isinstance(self.transport, httpx.AsyncBaseTransport):
            raise ConfigError("transport must be an httpx.AsyncBaseTransport")

    @property
    def key_rate_limit(self) -> RateLimit:
        """The bucket parameters for requests carrying a known API key."""
        return self.api_key_rate_limit or self.rate_limit
