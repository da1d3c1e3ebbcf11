"""A rate-limit store shared by replicas: the token buckets live in Redis (``[redis]`` extra).

Each decision is one round trip: an atomic Lua script reads the bucket, decides and writes it
back, so replicas deciding at the same moment never race. The script is GCRA (the generic
cell rate algorithm), the token bucket written as one timestamp per bucket; it admits exactly
what `MemoryStore`'s bucket admits and answers the same
wait. Time is Redis's own clock by default, so replicas' clocks need not agree; a step back
of that clock leaves active buckets empty (one token's wait), not in debt for the step. A
bucket's key expires when the bucket would be full again: Redis only holds buckets in use.
Caller keys are hashed (an API key used as caller key never lands in Redis in clear).

Redis trouble never hangs a call. Each decision has a deadline (``timeout``, 50 ms by default);
when Redis fails or is late, the decision is made by the local ``fallback`` store (or, with
``fail_closed=True``, the call is refused), the outage is logged once
(``ratelimit_store_unavailable``, and ``ratelimit_store_recovered`` when it ends) and each
failed request is counted in ``octollm_ratelimit_store_errors_total``. While Redis is down,
calls do not wait on it: one call per ``probe_interval`` asks it again, and the first answer
brings every decision back to Redis.

The sync stack uses redis-py's client, the aio stack its asyncio client (one per event loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from octollm_grpc._core.log import get_logger
from octollm_grpc.server._ratelimit import BucketStore, MemoryStore, RateLimit, ceil_ms

__all__ = [
    "RedisStore",
]

#: Seconds a decision may wait for Redis before the fallback decides.
DEFAULT_TIMEOUT = 0.05
#: The start of every bucket key this store writes.
DEFAULT_PREFIX = "octollm:ratelimit:"

#: KEYS[1]: the bucket. ARGV: emission interval (µs per token), burst (tokens), now (µs, or
#: empty for Redis's clock). Returns 0 when the call may pass, else the µs until it would.
#: All figures are whole microseconds: Lua numbers are doubles and a script's number reply is
#: truncated to an integer, so integers keep both exact. The stored TAT is clamped to one full
#: burst ahead of now, so a step back of the clock leaves a bucket empty (one interval's
#: wait), never in debt for the length of the step.
GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[3])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
-- A TAT past a full burst from now is only reachable after the clock stepped back: the
-- bucket is empty, not hours in debt.
local horizon = now + interval * burst
if tat > horizon then
  tat = horizon
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
end
local allowed_at = tat + interval - interval * burst
if allowed_at > now then
  return allowed_at - now
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat),
           'PX', math.ceil((new_tat - now) / 1000))
return 0
"""

# What a failed or late decision raises: redis-py's own errors (connection, timeout, a script
# error), socket errors it lets through, and asyncio's deadline.
_STORE_ERRORS = (redis.RedisError, OSError, TimeoutError)

_log = get_logger("octollm_grpc.ratelimit")


class _Families:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.errors = Counter(
            "octollm_ratelimit_store_errors_total",
            "Rate-limit decisions the shared store failed to answer in time (the fallback "
            "decided them)",
            registry=registry,
        )


_families_lock = threading.Lock()
_families: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()


def _families_for(registry: CollectorRegistry) -> _Families:
    with _families_lock:
        found = _families.get(registry)
        if found is None:
            found = _families[registry] = _Families(registry)
        return found


class _Outage:
    """Whether Redis answers, and when to ask it again: one probe at a time, logged once.

    Shared by both stacks; only the round trip differs.
    """

    def __init__(
        self, probe_interval: float, clock: Callable[[], float], errors: Any, mode: str
    ) -> None:
        self._probe_interval = probe_interval
        self._clock = clock
        self._errors = errors
        self._mode = mode
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._probing = False

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def should_ask(self) -> bool:
        """Whether this decision goes to Redis (always while up; as the one probe while down)."""
        if self._down_since is None:
            return True
        now = self._clock()
        with self._lock:
            if self._down_since is None:
                return True
            if self._probing or now < self._next_probe:
                return False
            self._probing = True
            return True

    def answered(self) -> None:
        """Redis answered: an outage, if any, is over."""
        if self._down_since is None:
            return
        with self._lock:
            since = self._down_since
            if since is None:
                return
            self._down_since = None
            self._probing = False
        _log.info("ratelimit_store_recovered", store="redis",
                  outage_seconds=round(self._clock() - since, 3))

    def failed(self, exc: BaseException) -> None:
        """Redis failed this decision: count it; the first failure of an outage logs it."""
        self._errors.inc()
        now = self._clock()
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = now
            self._next_probe = now + self._probe_interval
            self._probing = False
        if first:
            _log.warning("ratelimit_store_unavailable", store="redis",
                         error=type(exc).__name__, detail=str(exc)[:200], fallback=self._mode,
                         probe_interval=self._probe_interval)

    def abandoned(self) -> None:
        """The probe was cancelled before Redis answered: no verdict, the next call probes."""
        with self._lock:
            self._probing = False

    def until_probe(self) -> float:
        """Seconds until Redis is asked again."""
        return max(self._next_probe - self._clock(), 0.0)


class RedisStore:
    """Token buckets in Redis, shared by every replica pointing at the same Redis.

    Give ``url`` (``redis://HOST:PORT/DB``; clients are built with ``timeout`` as connect and
    read timeout and no retry beyond one reconnect), or your own ``client``
    (``redis.Redis``, for the sync stack) and/or ``async_client`` (``redis.asyncio.Redis``,
    for the aio stack; used from one event loop). A sync ``client`` of your own keeps its own
    timeouts and retries: give it short ones (``Redis(host=...)`` retries 10 times by default).
    ``timeout`` bounds each decision (on the aio stack the whole round trip; on the sync
    stack each socket operation). ``fallback`` decides while Redis is unavailable (default: a
    fresh `MemoryStore`, so each replica enforces the limit on its own);
    ``fail_closed=True`` refuses every call instead, with a wait until the next probe.
    ``probe_interval`` is how often, in ``clock`` seconds, Redis is asked again during an
    outage. ``time_source`` (seconds) replaces Redis's clock in the
    bucket arithmetic, for tests; every replica must then use the same one. ``registry``
    takes ``octollm_ratelimit_store_errors_total``.

    Args:
        url: ``redis://HOST:PORT/DB``.
        client: A sync ``redis.Redis`` of your own.
        async_client: A ``redis.asyncio.Redis`` of your own.
        prefix: The keys' prefix.
        timeout: Seconds a decision may wait for Redis.
        fallback: Decides while Redis is unavailable.
        fail_closed: Refuse every call while Redis is unavailable.
        probe_interval: Seconds between probes during an outage.
        clock: Monotonic seconds.
        time_source: Replaces Redis's clock (tests).
        registry: Takes ``octollm_ratelimit_store_errors_total``.

    Raises:
        ValueError: Neither ``url`` nor a client, or a ``timeout`` or ``probe_interval``
            that is not positive.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        fallback: BucketStore | None = None,
        fail_closed: bool = False,
        probe_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        time_source: Callable[[], float] | None = None,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        if url is None and client is None and async_client is None:
            raise ValueError("RedisStore needs a url, a client or an async_client")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if not probe_interval > 0:
            raise ValueError(f"probe_interval must be positive, not {probe_interval!r}")
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.fail_closed = fail_closed
        self.fallback: BucketStore = fallback if fallback is not None else MemoryStore()
        self._time_source = time_source
        errors = _families_for(registry).errors if registry is not None else _NoCounter()
        self._outage = _Outage(probe_interval, clock, errors,
                               "deny" if fail_closed else "local")
        self._own_client = client is None
        if client is None and url is not None:
            # Built now (it connects only when used), so a malformed url fails here, not per call.
            client = redis.Redis.from_url(url, **self._client_options(sync=True))
        self._client = client
        self._script: Any = None
        self._build_lock = threading.Lock()
        self._own_async_client = async_client is None
        # (event loop, client, script): the asyncio client's connections belong to one loop.
        self._aio: tuple[asyncio.AbstractEventLoop, redis.asyncio.Redis, Any] | None = None
        self._aio_user = async_client

    # -- BucketStore ----------------------------------------------------------------------

    def __len__(self) -> int:
        """Buckets held in this process: the fallback's (Redis holds the shared ones)."""
        return len(self.fallback)

    @property
    def available(self) -> bool:
        """``False`` from a failed decision until Redis answers a probe again."""
        return not self._outage.down

    def take(self, scope: str, key: str, limit: RateLimit) -> float:
        """Take a token from the shared bucket (sync client); see
        [`RedisStore`][octollm_grpc.server.ratelimit_redis.RedisStore]."""
        if self._outage.should_ask():
            probe = self._outage.down
            try:
                script = self._sync_script()
                wait_us = script(keys=[self.key(scope, key)], args=self._args(limit))
            except _STORE_ERRORS as exc:
                self._outage.failed(exc)
            except BaseException:
                if probe:  # interrupted: free the probe, or Redis is never asked again
                    self._outage.abandoned()
                raise
            else:
                return self._answered(wait_us)
        return self._closed_wait() if self.fail_closed else self.fallback.take(scope, key, limit)

    async def take_async(self, scope: str, key: str, limit: RateLimit) -> float:
        """Take a token from the shared bucket (asyncio client); see
        [`RedisStore`][octollm_grpc.server.ratelimit_redis.RedisStore]."""
        if self._outage.should_ask():
            probe = self._outage.down
            try:
                # The deadline covers connect, send and reply; on expiry redis-py drops the
                # connection it was using, so no late reply is read by the next decision.
                async with asyncio.timeout(self.timeout):
                    script = self._async_script()
                    wait_us = await script(keys=[self.key(scope, key)], args=self._args(limit))
            except _STORE_ERRORS as exc:
                self._outage.failed(exc)
            except BaseException:
                # Cancelled (CancelledError is no store error): free the probe, or Redis is
                # never asked again and every decision stays local for good.
                if probe:
                    self._outage.abandoned()
                raise
            else:
                return self._answered(wait_us)
        if self.fail_closed:
            return self._closed_wait()
        return await self.fallback.take_async(scope, key, limit)

    def _answered(self, wait_us: Any) -> float:
        self._outage.answered()
        return _seconds(wait_us)

    def _closed_wait(self) -> float:
        # Fail closed: every caller waits until the next probe (at least a millisecond).
        return max(ceil_ms(self._outage.until_probe()), 0.001)

    def connect(self) -> bool:
        """Connect the sync client and load the script now, before calls arrive.

        The first decision otherwise pays for the connection and the script's upload (a few
        round trips), which on a busy host can exceed ``timeout``. ``False`` when Redis did
        not answer: the outage is then logged and counted, and calls start on the fallback.
        """
        try:
            self._sync_script()
            assert self._client is not None
            self._client.script_load(GCRA_SCRIPT)
        except _STORE_ERRORS as exc:
            self._outage.failed(exc)
            return False
        self._outage.answered()
        return True

    async def connect_async(self, timeout: float = 1.0) -> bool:
        """`connect` for the asyncio client of the running loop, within ``timeout`` s."""
        try:
            async with asyncio.timeout(timeout):
                self._async_script()
                assert self._aio is not None
                await self._aio[1].script_load(GCRA_SCRIPT)
        except _STORE_ERRORS as exc:
            self._outage.failed(exc)
            return False
        self._outage.answered()
        return True

    # -- keys and arguments ---------------------------------------------------------------

    def key(self, scope: str, key: str) -> str:
        """The Redis key of the bucket of ``key`` under ``scope`` (a hash: keys may be secrets)."""
        digest = hashlib.blake2b(f"{scope}\n{key}".encode(), digest_size=16).hexdigest()
        return self.prefix + digest

    def _args(self, limit: RateLimit) -> list[Any]:
        interval = max(1, round(limit.window * 1_000_000 / limit.limit))
        source = self._time_source
        now = "" if source is None else str(int(source() * 1_000_000))
        return [interval, limit.capacity, now]

    # -- clients --------------------------------------------------------------------------

    def _client_options(self, *, sync: bool) -> dict[str, Any]:
        # One immediate reconnect (for a connection Redis closed), never a backoff nor a retry
        # after a timeout. Said explicitly: redis-py 8.1's Redis(host=...) defaults to 10
        # retries with jittered backoff (about 4 s against a dead or hung Redis, measured),
        # from_url to none; and to 5 s per read.
        retry_class = Retry if sync else AsyncRetry
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": retry_class(NoBackoff(), 1, (redis.ConnectionError,)),
        }

    def _sync_script(self) -> Any:
        script = self._script
        if script is None:
            with self._build_lock:
                if self._script is None:
                    if self._client is None:  # closed, or only an async client was given
                        if self.url is None:
                            raise RuntimeError("RedisStore has no sync client: pass url or client")
                        self._client = redis.Redis.from_url(
                            self.url, **self._client_options(sync=True))
                    self._script = self._client.register_script(GCRA_SCRIPT)
                script = self._script
        return script

    def _async_script(self) -> Any:
        loop = asyncio.get_running_loop()
        found = self._aio
        if found is not None and found[0] is loop:
            return found[2]
        if self._aio_user is not None:
            client = self._aio_user
        else:
            if self.url is None:
                raise RuntimeError("RedisStore has no async client: pass url or async_client")
            client = redis.asyncio.Redis.from_url(self.url, **self._client_options(sync=False))
        script = client.register_script(GCRA_SCRIPT)
        self._aio = (loop, client, script)
        return script

    def close(self) -> None:
        """Close the sync client this store built (not one it was given)."""
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None
            self._script = None

    async def aclose(self) -> None:
        """Close the asyncio client this store built for the running loop (not one it was given)."""
        found = self._aio
        self._aio = None
        if found is not None and self._own_async_client:
            await found[1].aclose()


class _NoCounter:
    def inc(self, amount: float = 1) -> None:
        """Count nothing (no registry was given)."""


def _seconds(wait_us: Any) -> float:
    # Whole milliseconds, rounded up, in integers: no float error can add a millisecond.
    wait = int(wait_us)
    return 0.0 if wait <= 0 else -(-wait // 1000) / 1000
