"""Per-key ingest rate: a token bucket of events for each API key, in this process.

A batch costs one token per event (at least one per request), so a key that
sends 1,000-event batches and one that sends single events are held to the
same rate. The buckets live in the server process: with `serve --workers N`
each process allows the rate, so a key may send up to N times it in all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

# Buckets kept before full ones (keys idle long enough to have refilled) are dropped.
MAX_BUCKETS = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class IngestRateLimiter:
    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, events: int) -> int | None:
        """Spend `events` tokens of `key`'s bucket; None when they were there, else
        the whole seconds after which they will be (nothing is spent then)."""
        if not self.enabled:
            return None
        now = self._clock()
        cost = max(1, events)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._drop_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return None
        return max(1, math.ceil((cost - bucket.tokens) / self.rate))

    def _drop_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.stamp) * self.rate >= self.burst:
                del self._buckets[key]
