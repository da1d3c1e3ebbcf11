"""Token-bucket rate limiting per caller, with per-method limits and bounded memory.

A caller's key is its peer address without the port (so new connections do not get new
buckets), or the value of a metadata key such as ``x-api-key`` when one is configured. Methods
without their own limit share one bucket per caller; a method with its own limit has its own.
Where the buckets live is the limiter's *store*. The default `MemoryStore` keeps them
in this process, in an LRU map of at most ``max_keys`` entries: however many distinct callers
appear, memory stays bounded. An evicted caller comes back with a full bucket, so size
``max_keys`` above the number of callers active within one refill period. Replicas that must
share one limit use
[`octollm_grpc.server.ratelimit_redis.RedisStore`][octollm_grpc.server.ratelimit_redis.RedisStore]
instead (the
``[redis]`` extra); any object with the `BucketStore` methods will do.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from octollm_grpc.errors import RateLimitError
from octollm_grpc.server._identity import certificate_principal

__all__ = ["BucketStore", "MemoryStore", "RateLimit", "RateLimiter", "ceil_ms", "peer_host"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``limit`` calls per ``window`` seconds, in bursts of up to ``burst`` (default: ``limit``).

    Args:
        limit: Calls allowed per ``window``.
        window: The window, in whole seconds.
        burst: Calls allowed at once (default: ``limit``).

    Raises:
        ValueError: A value out of range.
    """

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


def ceil_ms(seconds: float) -> float:
    """``seconds`` rounded up to whole milliseconds: a caller told to wait this long never
    comes back before its token is there (the pushback trailer carries whole milliseconds)."""
    return math.ceil(seconds * 1000.0) / 1000.0


@runtime_checkable
class BucketStore(Protocol):
    """Where a [`RateLimiter`][octollm_grpc.server.RateLimiter] keeps its token buckets.

    ``take`` and ``take_async`` take one token from the bucket of ``(scope, key)`` under
    ``limit``: ``0.0`` when the call may pass, else the seconds until a token is due (whole
    milliseconds, rounded up). The sync stack calls ``take``, the aio stack ``take_async``;
    neither may raise for a store outage (a store decides itself how to answer then).
    ``len()`` is how many buckets the store holds in this process.
    """

    def take(self, scope: str, key: str, limit: RateLimit) -> float: ...

    async def take_async(self, scope: str, key: str, limit: RateLimit) -> float: ...

    def __len__(self) -> int: ...


class MemoryStore:
    """Token buckets in this process: an LRU map of at most ``max_keys`` buckets.

    ``clock`` is a monotonic clock in seconds. Thread-safe; the lock is held only for the
    bucket arithmetic. Each process (replica) has its own buckets.

    Args:
        max_keys: Buckets kept (the least recently used go first).
        clock: Monotonic seconds.

    Raises:
        ValueError: ``max_keys`` that is not positive.
    """

    def __init__(
        self, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be positive, not {max_keys!r}")
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # (scope, key) -> [tokens, last refill time]; ordered oldest use first.
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def __len__(self) -> int:
        """How many buckets are held (never more than ``max_keys``)."""
        return len(self._buckets)

    def take(self, scope: str, key: str, limit: RateLimit) -> float:
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
        return ceil_ms(missing / limit.rate)

    async def take_async(self, scope: str, key: str, limit: RateLimit) -> float:
        """`take` (it never blocks, so the aio stack calls it directly)."""
        return self.take(scope, key, limit)


class RateLimiter:
    """Token buckets keyed by (limit scope, caller key), kept in a `BucketStore`.

    ``default`` applies to every method not in ``methods`` (``None``: unlimited). ``methods``
    maps full method names (``/pkg.Service/Method``) to their own
    [`RateLimit`][octollm_grpc.server.RateLimit], or to
    ``None`` to exempt them. ``key_metadata`` names the metadata key identifying the caller
    (the peer host is used when it is absent); ``key_certificate=True`` keys a caller that
    presented a client certificate (mTLS) by its principal (see
    [`octollm_grpc.server.certificate_principal`][octollm_grpc.server.certificate_principal]),
    which, unlike a header, the
    caller cannot change at will. ``store`` holds the buckets; by default a
    `MemoryStore` built from ``max_keys`` and ``clock`` (a monotonic clock in seconds),
    which may then not be given with ``store``. Thread-safe.

    Args:
        default: The limit of every method not listed (``None``: none).
        methods: Limits by ``"/pkg.Svc/Method"`` or ``"/pkg.Svc/"`` (``None``: unlimited).
        key_metadata: The metadata key that tells callers apart (default: the peer).
        max_keys: Buckets kept in the default store.
        clock: Monotonic seconds for the default store.
        store: Where the buckets live (default: a `MemoryStore`).

    Raises:
        ValueError: ``store`` given with ``max_keys`` or ``clock`` (they configure the
            default store).
    """

    def __init__(
        self,
        default: RateLimit | None,
        *,
        methods: Mapping[str, RateLimit | None] | None = None,
        key_metadata: str | None = None,
        max_keys: int | None = None,
        clock: Callable[[], float] | None = None,
        store: BucketStore | None = None,
        key_certificate: bool = False,
    ) -> None:
        if store is None:
            store = MemoryStore(
                max_keys=10_000 if max_keys is None else max_keys,
                clock=time.monotonic if clock is None else clock,
            )
        elif max_keys is not None or clock is not None:
            raise ValueError("max_keys and clock configure the default store: "
                             "give them to the store instead")
        self._default = default
        self._methods = dict(methods or {})
        self._key_metadata = key_metadata.lower() if key_metadata else None
        self._key_certificate = key_certificate
        self.store = store

    def __len__(self) -> int:
        """How many buckets the store holds in this process."""
        return len(self.store)

    def limit_for(self, method: str) -> tuple[str, RateLimit] | None:
        """The (scope, limit) governing ``method``, or ``None`` when it is not limited."""
        if method in self._methods:
            own = self._methods[method]
            return None if own is None else (method, own)
        return None if self._default is None else ("", self._default)

    def key_for(
        self, metadata: Iterable[Any] | None, peer: Callable[[], str], context: Any = None
    ) -> str:
        """The caller key: the certificate's principal (with ``key_certificate`` and a
        servicer ``context`` whose peer presented one), else the configured metadata value,
        else the peer host."""
        if self._key_certificate and context is not None:
            principal = certificate_principal(context)
            if principal is not None:
                return "principal:" + principal
        wanted = self._key_metadata
        if wanted is not None and metadata:
            for key, value in metadata:
                if key == wanted:
                    return value if isinstance(value, str) else repr(value)
        return peer_host(peer())

    @property
    def key_metadata(self) -> str | None:
        """The metadata key naming callers (lower case), or ``None`` (peer addresses)."""
        return self._key_metadata

    def acquire(self, scope: str, limit: RateLimit, key: str) -> float:
        """Take a token: ``0.0`` when the call may pass, else the seconds until one is due."""
        return self.store.take(scope, key, limit)

    async def acquire_async(self, scope: str, limit: RateLimit, key: str) -> float:
        """`acquire` for the aio stack (a shared store answers without blocking the loop)."""
        return await self.store.take_async(scope, key, limit)

    def check(self, scope: str, limit: RateLimit, key: str) -> None:
        """Take a token or raise `RateLimitError` with the wait in ``retry_after``."""
        wait = self.store.take(scope, key, limit)
        if wait > 0.0:
            raise RateLimitError(limit=limit.limit, window=limit.window, retry_after=wait)

    async def check_async(self, scope: str, limit: RateLimit, key: str) -> None:
        """`check` for the aio stack."""
        wait = await self.store.take_async(scope, key, limit)
        if wait > 0.0:
            raise RateLimitError(limit=limit.limit, window=limit.window, retry_after=wait)
