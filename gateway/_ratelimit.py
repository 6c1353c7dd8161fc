"""Per-client token buckets (docs/gateway_api.md 5.2)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

from gateway._config import RateLimit

__all__ = ["TokenBuckets"]


class TokenBuckets:
    """Token buckets keyed by client (IP or API key), with a bounded table.

    A bucket starts full (``burst`` tokens) and refills at ``rate_per_s``; a request
    takes one token. The table keeps at most ``max_keys`` buckets, evicting the least
    recently used; an evicted bucket comes back full, which only ever errs towards
    letting a request through (the bound is on memory, not on fairness).
    """

    def __init__(self, clock: Callable[[], float], max_keys: int) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, limit: RateLimit, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from ``key``'s bucket.

        Returns 0.0 when granted, else the seconds until enough tokens are back (the
        bucket is left unchanged, so a refused request costs nothing).
        """
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + max(0.0, now - last) * limit.rate_per_s)
        if tokens >= cost:
            self._store(key, tokens - cost, now)
            return 0.0
        self._store(key, tokens, now)
        return (cost - tokens) / limit.rate_per_s

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

    @staticmethod
    def retry_after(seconds: float) -> int:
        """A Retry-After value in whole seconds (at least 1)."""
        return max(1, math.ceil(seconds))
