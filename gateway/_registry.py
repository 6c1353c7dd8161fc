"""The replica registry: which enclave replica holds which key id, and its attestation.

Each replica is asked ``GET /internal/attestation`` (docs/gateway_api.md 4.1) and answers
``{"key_id", "token", "public_key_jwk"}``. The gateway does not verify tokens (clients
do; the gateway is not trusted), but it checks the shape of the answer and that the
JWK's key id is the announced ``key_id`` (``sealed.EnclavePublicKey.from_jwk``), so it
routes consistently with what it publishes. Refreshes happen when the cache is older
than the TTL, when an envelope names an unknown key id (at most once per
``min_refresh_interval_s``), and when a replica reports an unknown key; they are
single-flight (one refresh at a time, callers share its result).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx

from sealed import EnclavePublicKey, SealedError

__all__ = [
    "Replica",
    "ReplicaAttestation",
    "ReplicaError",
    "ReplicaRegistry",
    "read_limited",
]

_KEY_ID = re.compile(r"[0-9a-f]{32}")
_TOKEN = re.compile(r"[A-Za-z0-9_.~+/=-]{1,16384}")
_MAX_ATTESTATION_BYTES = 64 * 1024


class ReplicaError(Exception):
    """A replica's answer could not be used (unreachable, bad status, bad document)."""


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """Read a streamed response body, refusing more than ``limit`` bytes."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ReplicaError(f"replica answer larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ReplicaError(f"replica answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class ReplicaAttestation:
    """A replica's current key id, attestation-result token and public JWK."""

    key_id: str
    token: str
    public_key_jwk: Mapping[str, str]

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not _KEY_ID.fullmatch(self.key_id):
            raise ReplicaError("key_id must be 32 lowercase hex digits")
        if not isinstance(self.token, str) or not _TOKEN.fullmatch(self.token):
            raise ReplicaError("token must be a compact JWS (at most 16 KiB)")
        jwk = self.public_key_jwk
        if not isinstance(jwk, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in jwk.items()
        ):
            raise ReplicaError("public_key_jwk must be an object of strings")
        try:
            public = EnclavePublicKey.from_jwk(jwk)
        except SealedError as exc:
            raise ReplicaError(f"public_key_jwk: {exc}") from None
        if public.key_id.hex != self.key_id:
            raise ReplicaError("public_key_jwk does not have the announced key id")
        object.__setattr__(self, "public_key_jwk", MappingProxyType(dict(jwk)))

    @classmethod
    def from_json(cls, data: bytes) -> ReplicaAttestation:
        """Parse a replica's ``/internal/attestation`` answer strictly."""
        try:
            value = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ReplicaError("attestation answer is not JSON") from None
        if not isinstance(value, dict) or set(value) != {"key_id", "token", "public_key_jwk"}:
            raise ReplicaError("attestation answer must be {key_id, token, public_key_jwk}")
        return cls(value["key_id"], value["token"], value["public_key_jwk"])

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "token": self.token,
            "public_key_jwk": dict(self.public_key_jwk),
        }


class Replica:
    """One enclave replica: its URL, current attestation and in-flight counter."""

    def __init__(self, index: int, url: str, max_in_flight: int) -> None:
        self.index = index
        self.url = url
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.attestation: ReplicaAttestation | None = None
        self.last_error: str | None = None

    @property
    def name(self) -> str:
        """The replica's label in metrics and logs (its index; URLs stay internal)."""
        return str(self.index)

    def try_acquire(self) -> bool:
        """Take an in-flight slot; False when the replica is full (back-pressure)."""
        if self.in_flight >= self.max_in_flight:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1


class ReplicaRegistry:
    """The replicas and their attestations, refreshed from ``/internal/attestation``."""

    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        client: Callable[[], httpx.AsyncClient],
        max_in_flight: int,
        ttl_s: float,
        min_refresh_interval_s: float,
        timeout_s: float,
        clock: Callable[[], float],
        on_refresh: Callable[[Replica, str], None] | None = None,
    ) -> None:
        self.replicas = tuple(Replica(i, u, max_in_flight) for i, u in enumerate(urls))
        self._client = client
        self._ttl = ttl_s
        self._min_interval = min_refresh_interval_s
        self._timeout = timeout_s
        self._clock = clock
        self._on_refresh = on_refresh
        self._refreshed_at: float | None = None
        self._refreshing: asyncio.Task[None] | None = None

    def attested(self) -> list[Replica]:
        """Replicas with a current attestation, in configuration order."""
        return [r for r in self.replicas if r.attestation is not None]

    def key_ids(self) -> list[str]:
        """The key ids currently held (distinct, in configuration order)."""
        ids = [r.attestation.key_id for r in self.replicas if r.attestation is not None]
        return list(dict.fromkeys(ids))

    def for_key(self, key_id: str) -> list[Replica]:
        """Replicas holding ``key_id``."""
        return [
            r for r in self.replicas if r.attestation is not None and r.attestation.key_id == key_id
        ]

    @property
    def stale(self) -> bool:
        return self._refreshed_at is None or self._clock() - self._refreshed_at >= self._ttl

    def invalidate(self) -> None:
        """Mark the cache stale: the next request refreshes it (a replica went away)."""
        self._refreshed_at = None

    async def ensure_fresh(self) -> None:
        """Refresh when the cache is older than the TTL."""
        if self.stale:
            await self.refresh()

    async def refresh(self, *, force: bool = False, urgent: bool = False) -> None:
        """Ask every replica for its attestation (concurrently, single-flight).

        With ``force``, refresh even within the TTL, but at most once per
        ``min_refresh_interval_s`` (an unknown key id must not let a client make the
        gateway hammer the replicas). ``urgent`` skips that interval: for a replica that
        itself reported an unknown key, i.e. the cache is known to be wrong (a client
        cannot cause this twice: after the refresh its key id routes nowhere).
        """
        if self._refreshing is None:
            if (
                force
                and not urgent
                and self._refreshed_at is not None
                and self._clock() - self._refreshed_at < self._min_interval
            ):
                return
            if not force and not urgent and not self.stale:
                return
            task = asyncio.ensure_future(self._refresh_all())
            self._refreshing = task
            task.add_done_callback(self._refresh_done)
        # shielded: a caller that gives up (timeout, disconnect) does not cancel the
        # refresh the other callers are waiting for
        await asyncio.shield(self._refreshing)

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved: _refresh_all handles replica errors itself

    async def _refresh_all(self) -> None:
        await asyncio.gather(*(self._refresh_one(r) for r in self.replicas))
        self._refreshed_at = self._clock()

    async def _refresh_one(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client().stream(
                    "GET",
                    replica.url + "/internal/attestation",
                    headers={"Accept": "application/json"},
                ) as response:
                    if response.status_code != 200:
                        raise ReplicaError(f"status {response.status_code}")
                    data = await read_limited(response, _MAX_ATTESTATION_BYTES)
            replica.attestation = ReplicaAttestation.from_json(data)
            replica.last_error = None
            outcome = "ok"
        except (ReplicaError, httpx.HTTPError, TimeoutError) as exc:
            replica.attestation = None
            replica.last_error = str(exc) or type(exc).__name__
            outcome = "timeout" if isinstance(exc, TimeoutError) else "error"
        if self._on_refresh is not None:
            self._on_refresh(replica, outcome)
