"""RedisStore against a real Redis: the script's arithmetic, key expiry, outages and probes."""

from __future__ import annotations

import hashlib
import time

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc.server._ratelimit import MemoryStore, RateLimit, RateLimiter
from octollm_grpc.server.ratelimit_redis import GCRA_SCRIPT, RedisStore
from octollm_grpc.testing import FakeClock
from tests.redis.server import RedisServer

ERRORS = "octollm_ratelimit_store_errors_total"
#: The deadline of stores whose test is not about it: a loaded host must not turn them local.
SLACK = 1.0


def _events(logs: list[dict[str, object]]) -> list[str]:
    return [str(x["event"]) for x in logs if str(x["event"]).startswith("ratelimit_store")]


def test_script_admits_exactly_what_the_memory_bucket_admits(redis_server: RedisServer) -> None:
    """Same burst, waits and refill as MemoryStore, step for step (time injected into both)."""
    clock = FakeClock()
    shared = RedisStore(redis_server.url, timeout=SLACK, time_source=clock.now, registry=None)
    local = MemoryStore(clock=clock.now)
    limit = RateLimit(limit=1, window=1, burst=3)
    steps: list[float] = [0, 0, 0, 0, 0.25, 0, 0.75, 0, 0, 10, 0, 0, 0, 0]
    try:
        for advance in steps:
            clock.advance(advance)
            assert shared.take("", "k", limit) == local.take("", "k", limit)
        # And the figures themselves (the memory store's own test pins the same ones).
        assert [shared.take("", "x", limit) for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
        clock.advance(0.25)
        assert shared.take("", "x", limit) == 0.75
        assert shared.available  # every answer came from Redis
    finally:
        shared.close()


async def test_async_client_gives_the_same_answers(redis_server: RedisServer) -> None:
    """take_async (redis.asyncio) shares the buckets take (sync client) writes."""
    clock = FakeClock()
    store = RedisStore(redis_server.url, timeout=SLACK, time_source=clock.now, registry=None)
    limit = RateLimit(limit=10, window=60, burst=2)
    try:
        assert store.take("", "k", limit) == 0.0
        assert await store.take_async("", "k", limit) == 0.0
        assert await store.take_async("", "k", limit) == 6.0
        assert store.take("", "k", limit) == 6.0
    finally:
        store.close()
        await store.aclose()


def test_keys_expire_when_the_bucket_is_full_again(redis_server: RedisServer) -> None:
    """One key per (scope, caller), hashed, with a TTL equal to the time until it is full."""
    store = RedisStore(redis_server.url, timeout=SLACK, registry=None)
    inspect = redis_server.client()
    limit = RateLimit(limit=2, window=1, burst=4)  # 0.5 s per token
    try:
        for _ in range(3):
            store.take("/svc/M", "api-key-secret", limit)
        keys = inspect.keys("*")
        assert keys == [store.key("/svc/M", "api-key-secret").encode()]
        assert b"secret" not in keys[0]
        ttl = inspect.pttl(keys[0])
        assert 1000 < ttl <= 1500  # 3 tokens used: full again in 1.5 s
    finally:
        store.close()
        inspect.close()


def test_limiter_rejects_with_the_wait_from_redis(redis_server: RedisServer) -> None:
    """RateLimiter.check over a RedisStore raises RateLimitError(retry_after) as the local one."""
    from octollm_grpc.errors import RateLimitError

    store = RedisStore(redis_server.url, timeout=SLACK, registry=None)
    limiter = RateLimiter(RateLimit(limit=10, window=60, burst=1), store=store)
    scope, limit = limiter.limit_for("/a.B/C") or ("?", RateLimit(1))
    try:
        limiter.check(scope, limit, "k")
        with pytest.raises(RateLimitError) as caught:
            limiter.check(scope, limit, "k")
        assert 5.9 < caught.value.retry_after <= 6.0
        assert caught.value.details == {"limit": 10, "window": 60}
    finally:
        store.close()


def test_store_and_limiter_options_are_validated() -> None:
    """A store needs somewhere to go; clock/max_keys belong to the store once one is given."""
    with pytest.raises(ValueError, match="url"):
        RedisStore()
    with pytest.raises(ValueError, match="timeout"):
        RedisStore("redis://127.0.0.1:1/0", timeout=0)
    with pytest.raises(ValueError, match="redis://"):
        RedisStore("http://127.0.0.1:6379/0")  # at construction, not on every call
    with pytest.raises(ValueError, match="max_keys"):
        RateLimiter(RateLimit(1), store=MemoryStore(), max_keys=5)


def test_outage_falls_back_logs_once_probes_and_comes_back(redis_server: RedisServer) -> None:
    """Redis killed: local decisions, one log event, no per-call attempts; back after a probe."""
    clock = FakeClock()
    registry = CollectorRegistry()
    store = RedisStore(redis_server.url, timeout=SLACK, clock=clock.now, probe_interval=2.0,
                       registry=registry)
    limit = RateLimit(limit=1, window=3600, burst=3)
    try:
        with capture_logs() as logs:
            assert store.take("", "k", limit) == 0.0  # Redis: 2 tokens left there
            redis_server.kill()
            # The local bucket starts full: 3 calls pass, the 4th waits, whatever Redis had.
            waits = [store.take("", "k", limit) for _ in range(4)]
            assert waits[:3] == [0.0, 0.0, 0.0] and waits[3] > 0
            assert registry.get_sample_value(ERRORS) == 1  # only the first call asked Redis
            assert not store.available
            clock.advance(2.0)
            store.take("", "k", limit)  # the probe: Redis still down
            assert registry.get_sample_value(ERRORS) == 2
            redis_server.start()
            store.take("", "other", limit)  # no probe due yet: Redis is not asked
            assert redis_server.client().dbsize() == 0
            clock.advance(2.0)
            assert store.take("", "k", limit) == 0.0  # the probe answers: a fresh shared bucket
            assert store.available
            assert redis_server.client().dbsize() == 1
        assert _events(logs) == ["ratelimit_store_unavailable", "ratelimit_store_recovered"]
        down = next(x for x in logs if x["event"] == "ratelimit_store_unavailable")
        assert down["log_level"] == "warning" and down["fallback"] == "local"
        assert down["error"] == "ConnectionError"
    finally:
        store.close()


def test_fail_closed_refuses_until_redis_answers(redis_server: RedisServer) -> None:
    """fail_closed=True: during an outage every call waits for the next probe."""
    clock = FakeClock()
    store = RedisStore(redis_server.url, timeout=SLACK, clock=clock.now, probe_interval=5.0,
                       fail_closed=True, registry=None)
    limit = RateLimit(limit=100)
    try:
        assert store.take("", "k", limit) == 0.0
        redis_server.kill()
        assert store.take("", "k", limit) == 5.0
        clock.advance(1.5)
        assert store.take("", "k", limit) == 3.5
        redis_server.start()
        clock.advance(3.5)
        assert store.take("", "k", limit) == 0.0
    finally:
        store.close()


def test_hung_redis_costs_one_timeout_per_probe_sync(redis_server: RedisServer) -> None:
    """Redis paused (SIGSTOP): the sync decision gives up after the timeout, then goes local."""
    clock = FakeClock()
    store = RedisStore(redis_server.url, clock=clock.now, timeout=0.05, registry=None)
    limit = RateLimit(limit=100)
    try:
        assert store.take("", "k", limit) == 0.0
        redis_server.pause()
        started = time.perf_counter()
        assert store.take("", "k", limit) == 0.0
        slow = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(100):
            store.take("", "k", limit)
        local = (time.perf_counter() - started) / 100
        assert 0.04 <= slow < 0.5, slow  # the socket timeout, not redis-py's 5 s default
        assert local < 0.005, local  # no call waits on Redis until the next probe
        assert not store.available
    finally:
        redis_server.resume()
        store.close()


async def test_hung_redis_costs_one_timeout_per_probe_aio(redis_server: RedisServer) -> None:
    """The same on the asyncio client: asyncio.timeout bounds the whole round trip."""
    clock = FakeClock()
    store = RedisStore(redis_server.url, clock=clock.now, timeout=0.05, registry=None)
    limit = RateLimit(limit=100)
    try:
        assert await store.take_async("", "k", limit) == 0.0
        redis_server.pause()
        started = time.perf_counter()
        assert await store.take_async("", "k", limit) == 0.0
        slow = time.perf_counter() - started
        assert 0.04 <= slow < 0.5, slow
        assert not store.available
        redis_server.resume()
        clock.advance(1.0)
        assert await store.take_async("", "k", limit) == 0.0
        assert store.available
    finally:
        redis_server.resume()
        await store.aclose()


async def test_connect_before_serving_loads_the_script(redis_server: RedisServer) -> None:
    """connect()/connect_async() load the script; against a dead Redis they log the outage."""
    store = RedisStore(redis_server.url, timeout=SLACK, registry=None)
    inspect = redis_server.client()
    try:
        assert store.connect() is True
        assert await store.connect_async() is True
        sha = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()
        assert inspect.script_exists(sha) == [True]
        redis_server.kill()
        with capture_logs() as logs:
            assert await store.connect_async() is False
        assert _events(logs) == ["ratelimit_store_unavailable"]
        assert not store.available
    finally:
        store.close()
        inspect.close()
        await store.aclose()


def test_sample_service_flag_is_validated() -> None:
    """--redis-url takes redis:// URLs, and needs rate limiting on."""
    from server.config import parse_args

    assert parse_args(["--redis-url", "redis://127.0.0.1:6379/0"], env={}).redis_url == (
        "redis://127.0.0.1:6379/0")
    assert parse_args([], env={}).redis_url is None
    with pytest.raises(SystemExit):
        parse_args(["--redis-url", "127.0.0.1:6379"], env={})
    with pytest.raises(SystemExit):
        parse_args(["--redis-url", "redis://h:1/0", "--rate-limit", "0"], env={})
    assert parse_args(["--redis-timeout", "0.2"], env={}).redis_timeout == 0.2
    with pytest.raises(SystemExit):
        parse_args(["--redis-timeout", "0"], env={})


async def test_clients_of_your_own_are_used_and_left_open(redis_server: RedisServer) -> None:
    """client= and async_client= are used as given; close()/aclose() leave them open."""
    import redis
    import redis.asyncio

    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    async_client = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port)
    store = RedisStore(client=client, async_client=async_client, registry=None)
    limit = RateLimit(limit=1, window=60, burst=1)
    try:
        assert store.take("", "k", limit) == 0.0
        assert 59.9 < await store.take_async("", "k", limit) <= 60.0
        store.close()
        await store.aclose()
        assert client.ping() and await async_client.ping()
        assert store.available
    finally:
        client.close()
        await async_client.aclose()
