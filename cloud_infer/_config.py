"""Configuration of the cloud inference service: bundle, codec, credentials, limits.

The enclave authenticates with a bearer credential (RFC 6750) that the key broker releases
to attested enclaves as the resource ``cloud-credential``. The service keeps only the
SHA-256 digests of the credentials it accepts (several, so that a credential can be
rotated without downtime) and compares in constant time (docs/cloud_api.md 2).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloud_infer._wire import CODEC_ID

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "CREDENTIAL_PATTERN",
    "DEFAULT_PORT",
    "BatchingOptions",
    "CloudConfig",
    "CloudLimits",
    "ConfigError",
    "CredentialSet",
    "credential_digest",
    "generate_credential",
]

DEFAULT_PORT = 8402
"""The loopback port of the default egress policy's destination."""

CREDENTIAL_PATTERN = re.compile(r"[A-Za-z0-9._~+/-]{32,512}={0,2}")
"""A credential: an RFC 6750 ``b64token`` of 32 to 512 characters (plus padding)."""

_DIGEST_LINE = re.compile(r"sha256:([0-9a-f]{64})")
_MAX_CREDENTIAL_FILE = 64 * 1024
_LABEL_NAME = re.compile(r"[\x20-\x7e]{1,64}")

Builder = Callable[[str, str, Mapping[str, Any]], "nn.Module"]


class ConfigError(ValueError):
    """An invalid cloud inference configuration (the service refuses to start)."""


def generate_credential() -> str:
    """A fresh credential: 32 random bytes as unpadded base64url (43 characters)."""
    return secrets.token_urlsafe(32)


def credential_digest(credential: str) -> bytes:
    """SHA-256 of a credential's ASCII bytes (what the service stores)."""
    if not isinstance(credential, str) or not CREDENTIAL_PATTERN.fullmatch(credential):
        raise ConfigError("a credential is a b64token of 32..512 characters")
    return hashlib.sha256(credential.encode("ascii")).digest()


@dataclass(frozen=True)
class CredentialSet:
    """The SHA-256 digests of the accepted bearer credentials (at least one)."""

    digests: frozenset[bytes]

    def __post_init__(self) -> None:
        digests = frozenset(self.digests)
        if not digests:
            raise ConfigError("at least one credential must be accepted")
        if not all(isinstance(d, bytes) and len(d) == 32 for d in digests):
            raise ConfigError("credential digests are 32-byte SHA-256 values")
        object.__setattr__(self, "digests", digests)

    @classmethod
    def of(cls, credentials: Iterable[str]) -> CredentialSet:
        """Accept exactly ``credentials`` (their digests are kept, not the values)."""
        return cls(frozenset(credential_digest(c) for c in credentials))

    @classmethod
    def from_text(cls, text: str) -> CredentialSet:
        """Parse a credential file: one entry per line, either a credential itself or
        ``sha256:<64 hex digits>`` (its digest); blank lines and ``#`` comments ignored."""
        digests: set[bytes] = set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            match = _DIGEST_LINE.fullmatch(line)
            if match is not None:
                digests.add(bytes.fromhex(match.group(1)))
            elif CREDENTIAL_PATTERN.fullmatch(line):
                digests.add(credential_digest(line))
            else:
                raise ConfigError(
                    f"credential file line {number}: neither a credential nor sha256:<hex>"
                )
        return cls(frozenset(digests))

    @classmethod
    def from_file(cls, path: Path) -> CredentialSet:
        """Read a credential file (see :meth:`from_text`)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the credential file: {exc.strerror}") from None
        if len(data) > _MAX_CREDENTIAL_FILE:
            raise ConfigError("credential file too large")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ConfigError("the credential file is not ASCII") from None
        return cls.from_text(text)

    def matches(self, presented: str) -> bool:
        """Whether ``presented`` is an accepted credential.

        The presented value is hashed and compared with every accepted digest with
        ``hmac.compare_digest`` (no early exit), so timing reveals neither which entry
        matched nor how much of it.
        """
        if not CREDENTIAL_PATTERN.fullmatch(presented):
            return False
        digest = hashlib.sha256(presented.encode("ascii")).digest()
        found = False
        for accepted in self.digests:
            found |= hmac.compare_digest(digest, accepted)
        return found


def _positive_int(value: object, name: str, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ConfigError(f"{name} must be an integer in 1..{high}")


def _positive_float(value: object, name: str, high: float, *, zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number")
    low_ok = value >= 0 if zero else value > 0
    if not math.isfinite(value) or not low_ok or value > high:
        raise ConfigError(f"{name} must be in {'0' if zero else '(0'}..{high}]")


@dataclass(frozen=True)
class CloudLimits:
    """Request limits (docs/cloud_api.md 5)."""

    max_body_bytes: int = 1 << 20
    """A request body, checked on Content-Length and while reading."""
    max_batch: int = 256
    """Images in one request."""
    max_string_bytes: int = 1024
    """One single-form bit-string."""
    max_stream_bytes: int = 256 * 1024
    """One batch stream."""
    max_latent_side: int = 16
    """Latent rows/columns of a decoded image (its side is 16 times this)."""
    max_pending_images: int = 4096
    """Images admitted but not yet answered; above it: 503 with Retry-After."""
    request_timeout_s: float = 30.0
    """From admission to answer; past it: 503."""
    retry_after_s: int = 1
    """The Retry-After of 503 answers."""

    def __post_init__(self) -> None:
        _positive_int(self.max_body_bytes, "max_body_bytes", 1 << 30)
        _positive_int(self.max_batch, "max_batch", 0xFFFF)
        _positive_int(self.max_string_bytes, "max_string_bytes", 0xFFFF)
        _positive_int(self.max_stream_bytes, "max_stream_bytes", 1 << 30)
        _positive_int(self.max_latent_side, "max_latent_side", 256)
        _positive_int(self.max_pending_images, "max_pending_images", 1 << 24)
        _positive_float(self.request_timeout_s, "request_timeout_s", 3600.0)
        _positive_int(self.retry_after_s, "retry_after_s", 3600)


@dataclass(frozen=True)
class BatchingOptions:
    """Micro-batching across concurrent requests (docs/cloud_api.md 6).

    Requests are merged into one forward pass of up to ``max_batch_images`` images; a
    batch waits at most ``max_wait_s`` for company while the worker is idle (0: never
    waits; while the worker is busy, requests queue and go in the next batch).
    """

    max_batch_images: int = 256
    max_wait_s: float = 0.002

    def __post_init__(self) -> None:
        _positive_int(self.max_batch_images, "max_batch_images", 1 << 16)
        _positive_float(self.max_wait_s, "max_wait_s", 1.0, zero=True)


@dataclass(frozen=True)
class CloudConfig:
    """Everything :func:`cloud_infer.create_app` needs.

    ``bundle_dir`` holds at least the ``codec`` and ``target`` networks; ``codec_id`` is
    the accepted codec identifier (default: derived from the bundle's codec,
    ``pmc2-fp-<N>-<M>/v2``, the ``/v<n>`` being the bit-string format version; a given
    value must equal it); ``expected_bundle_digest`` pins the bundle manifest;
    ``image_size`` (height, width), when given, is the only decoded image size accepted;
    ``label_names`` name the target's classes;
    ``builder`` replaces the network registry (tests use tiny networks).
    """

    bundle_dir: Path
    credentials: CredentialSet
    codec_id: str | None = None
    expected_bundle_digest: str | None = None
    image_size: tuple[int, int] | None = (32, 32)
    label_names: tuple[str, ...] | None = None
    limits: CloudLimits = field(default_factory=CloudLimits)
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    device: str = "cpu"
    builder: Builder | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundle_dir", Path(self.bundle_dir))
        if not isinstance(self.credentials, CredentialSet):
            raise ConfigError("credentials must be a CredentialSet")
        if self.codec_id is not None and not CODEC_ID.fullmatch(self.codec_id):
            raise ConfigError(f"bad codec id {self.codec_id!r}")
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 16 or s % 16 for s in size
            ):
                raise ConfigError("image_size is (height, width), positive multiples of 16")
            if max(size) > 16 * self.limits.max_latent_side:
                raise ConfigError("image_size exceeds 16 x limits.max_latent_side")
            object.__setattr__(self, "image_size", size)
        if self.label_names is not None:
            names = tuple(self.label_names)
            if not names or not all(isinstance(n, str) and _LABEL_NAME.fullmatch(n) for n in names):
                raise ConfigError("label names are 1..64 printable ASCII characters")
            object.__setattr__(self, "label_names", names)
        if not isinstance(self.limits, CloudLimits):
            raise ConfigError("limits must be CloudLimits")
        if not isinstance(self.batching, BatchingOptions):
            raise ConfigError("batching must be BatchingOptions")
