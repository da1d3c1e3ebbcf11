"""Token-bucket rate limiting per caller, with per-method limits and bounded memory.

A caller's key is its peer address without the port (so new connections do not get new
buckets), or the value of a metadata key such as ``x-api-key`` when one is configured. Methods
without their own limit share one bucket per caller; a method with its own limit has its own.
Buckets live in an LRU map of at most ``max_keys`` entries: however many distinct callers
appear, memory stays bounded. An evicted caller comes back with a full bucket, so size
``max_keys`` above the number of callers active within one refill period.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from octollm_grpc.errors import RateLimitError

__all__ = ["RateLimit", "RateLimiter", "peer_host"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``limit`` calls per ``window`` seconds, in bursts of up to ``burst`` (default: ``limit``)."""

    limit: int
    window: int = 1
    burst: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"limit must be a positive int, not {self.limit!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a positive int of seconds, not {self.window!r}")
        if self.burst is not None and (
            isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1
        ):
            raise ValueError(f"burst must be a positive int or None, not {self.burst!r}")

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self.limit / self.window

    @property
    def capacity(self) -> int:
        """The bucket size: how many calls may pass at once after a quiet period."""
        return self.burst if self.burst is not None else self.limit


def peer_host(peer: str) -> str:
    """``ipv4:10.0.0.1:5555`` -> ``ipv4:10.0.0.1``; ``ipv6:[::1]:5555`` -> ``ipv6:[::1]``."""
    if peer.startswith(("ipv4:", "ipv6:")):
        host, sep, port = peer.rpartition(":")
        if sep and port.isdigit() and host not in ("ipv4", "ipv6"):
            return host
    return peer


class RateLimiter:
    """Token buckets keyed by (limit scope, caller key).

    ``default`` applies to every method not in ``methods`` (``None``: unlimited). ``methods``
    maps full method names (``/pkg.Service/Method``) to their own :class:`RateLimit`, or to
    ``None`` to exempt them. ``key_metadata`` names the metadata key identifying the caller
    (the peer host is used when it is absent). ``clock`` is a monotonic clock in seconds.
    Thread-safe; the lock is held only for the bucket arithmetic.
    """

    def __init__(
        self,
        default: RateLimit | None,
        *,
        methods: Mapping[str, RateLimit | None] | None = None,
        key_metadata: str | None = None,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be positive, not {max_keys!r}")
        self._default = default
        self._methods = dict(methods or {})
        self._key_metadata = key_metadata.lower() if key_metadata else None
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # (scope, key) -> [tokens, last refill time]; ordered oldest use first.
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def __len__(self) -> int:
        """How many buckets are held (never more than ``max_keys``)."""
        return len(self._buckets)

    def limit_for(self, method: str) -> tuple[str, RateLimit] | None:
        """The (scope, limit) governing ``method``, or ``None`` when it is not limited."""
        if method in self._methods:
            own = self._methods[method]
            return None if own is None else (method, own)
        return None if self._default is None else ("", self._default)

    def key_for(self, metadata: Iterable[Any] | None, peer: Callable[[], str]) -> str:
        """The caller key: the configured metadata value, else the peer host."""
        wanted = self._key_metadata
        if wanted is not None and metadata:
            for key, value in metadata:
                if key == wanted:
                    return value if isinstance(value, str) else repr(value)
        return peer_host(peer())

    def acquire(self, scope: str, limit: RateLimit, key: str) -> float:
        """Take a token: ``0.0`` when the call may pass, else the seconds until one is due."""
        now = self._clock()
        bucket_key = (scope, key)
        with self._lock:
            bucket = self._buckets.get(bucket_key)
            if bucket is None:
                bucket = [float(limit.capacity), now]
                self._buckets[bucket_key] = bucket
                if len(self._buckets) > self._max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(bucket_key)
                elapsed = now - bucket[1]
                if elapsed > 0:
                    bucket[0] = min(float(limit.capacity), bucket[0] + elapsed * limit.rate)
                bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return 0.0
            missing = 1.0 - bucket[0]
        # Whole milliseconds, rounded up: the caller never retries before a token is there.
        return math.ceil(missing / limit.rate * 1000.0) / 1000.0

    def check(self, scope: str, limit: RateLimit, key: str) -> None:
        """Take a token or raise :class:`RateLimitError` with the wait in ``retry_after``."""
        wait = self.acquire(scope, limit, key)
        if wait > 0.0:
            raise RateLimitError(limit=limit.limit, window=limit.window, retry_after=wait)
