"""RedisStore's own arithmetic and bookkeeping, pinned exactly (Redis only where it must answer)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import redis
import redis.asyncio
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from octollm_grpc.server import RateLimit
from octollm_grpc.server._ratelimit import MemoryStore
from octollm_grpc.server.ratelimit_redis import (
    DEFAULT_PREFIX,
    DEFAULT_TIMEOUT,
    RedisStore,
    _families_for,
    _NoCounter,
    _Outage,
    _seconds,
)
from octollm_grpc.testing import FakeClock
from tests.redis.server import RedisServer

ERRORS = "octollm_ratelimit_store_errors_total"
#: A port nothing listens on (connections refused at once).
DEAD = "redis://127.0.0.1:1/0"


@pytest.mark.parametrize(("wait_us", "seconds"), [
    (0, 0.0), (-5, 0.0), (1, 0.001), (999, 0.001), (1000, 0.001), (1001, 0.002),
    (1_500_000, 1.5), ("2000", 0.002), (b"3000", 0.003)])
def test_seconds_rounds_microseconds_up_to_whole_milliseconds(wait_us: object,
                                                               seconds: float) -> None:
    """A script's µs answer is whole ms rounded up; 0 or less is 'pass now'."""
    assert _seconds(wait_us) == seconds


def test_keys_and_arguments() -> None:
    """Key: prefix + blake2b-128 of scope and key; args: µs interval, burst, the injected now."""
    now = [12.3456789]
    store = RedisStore(DEAD, time_source=lambda: now[0], registry=None, prefix="p:")
    digest = hashlib.blake2b(b"scope\nkey", digest_size=16).hexdigest()
    assert store.key("scope", "key") == "p:" + digest
    assert store.key("scope", "key") != store.key("scope\nkey", "")
    assert store._args(RateLimit(limit=10, window=1, burst=4)) == [100_000, 4, "12345678"]
    assert store._args(RateLimit(limit=3, window=1)) == [333_333, 3, "12345678"]
    assert store._args(RateLimit(limit=10**9, window=1)) == [1, 10**9, "12345678"]
    redis_clock = RedisStore(DEAD, registry=None)
    assert redis_clock._args(RateLimit(limit=2, window=60)) == [30_000_000, 2, ""]
    assert redis_clock.prefix == DEFAULT_PREFIX == "octollm:ratelimit:"
    assert redis_clock.timeout == DEFAULT_TIMEOUT == 0.05
    store.close()
    redis_clock.close()


def test_constructor_checks_and_defaults() -> None:
    """url, client or async_client needed; timeout and probe_interval positive; defaults set."""
    with pytest.raises(ValueError, match="RedisStore needs a url, a client or an async_client"):
        RedisStore()
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=f"timeout must be positive, not {bad!r}"):
            RedisStore(DEAD, timeout=bad)
        with pytest.raises(ValueError, match=f"probe_interval must be positive, not {bad!r}"):
            RedisStore(DEAD, probe_interval=bad)
    store = RedisStore(DEAD, registry=None)
    assert isinstance(store.fallback, MemoryStore) and store.fail_closed is False
    assert store.url == DEAD and store.available and len(store) == 0
    given = MemoryStore()
    assert RedisStore(DEAD, fallback=given, registry=None).fallback is given
    store.close()


def test_client_options_are_short_and_retry_once_without_backoff() -> None:
    """Both clients: timeout as connect and read timeout, one retry on ConnectionError only."""
    store = RedisStore(DEAD, timeout=0.2, registry=None)
    for sync in (True, False):
        options = store._client_options(sync=sync)
        assert options["socket_timeout"] == options["socket_connect_timeout"] == 0.2
        retry = options["retry"]
        assert isinstance(retry._backoff, NoBackoff)
        assert retry._retries == 1
        assert tuple(retry._supported_errors) == (redis.ConnectionError,)
    assert isinstance(store._client_options(sync=True)["retry"], redis.retry.Retry)
    assert isinstance(store._client_options(sync=False)["retry"], redis.asyncio.retry.Retry)
    store.close()


def test_outage_bookkeeping_on_a_fake_clock() -> None:
    """One probe at a time, due each probe_interval; logged once; abandoned() frees it."""
    clock = FakeClock()
    registry = CollectorRegistry()
    counter = _families_for(registry).errors
    assert _families_for(registry).errors is counter
    outage = _Outage(2.0, clock.now, counter, "local")
    assert outage.should_ask() and not outage.down
    with capture_logs() as logs:
        outage.failed(ConnectionError("refused " + "x" * 300))
        outage.failed(OSError("again"))
    assert registry.get_sample_value(ERRORS) == 2
    assert logs == [{"event": "ratelimit_store_unavailable", "log_level": "warning",
                     "store": "redis", "error": "ConnectionError",
                     "detail": ("refused " + "x" * 300)[:200], "fallback": "local",
                     "probe_interval": 2.0}]
    assert outage.down and outage.until_probe() == 2.0
    assert not outage.should_ask()
    clock.advance(1.5)
    assert outage.until_probe() == 0.5 and not outage.should_ask()
    clock.advance(0.5)
    assert outage.until_probe() == 0.0
    assert outage.should_ask()  # the probe
    assert not outage.should_ask()  # only one at a time
    outage.abandoned()
    assert outage.should_ask()  # freed: the next call probes
    clock.advance(3)
    assert outage.until_probe() == 0.0
    with capture_logs() as logs:
        outage.answered()
        outage.answered()
    assert logs == [{"event": "ratelimit_store_recovered", "log_level": "info",
                     "store": "redis", "outage_seconds": 5.0}]
    assert not outage.down and outage.should_ask()
    _NoCounter().inc()


def test_a_dead_redis_fails_over_to_the_fallback_and_counts() -> None:
    """Connection refused: the fallback decides, one error counted; fail-closed waits."""
    clock = FakeClock()
    registry = CollectorRegistry()
    store = RedisStore(DEAD, clock=clock.now, registry=registry, timeout=1.0, probe_interval=3)
    limit = RateLimit(limit=1, window=60)
    assert store.take("", "k", limit) == 0.0  # the fallback's full bucket
    assert store.take("", "k", limit) == 60.0
    assert registry.get_sample_value(ERRORS) == 1 and not store.available
    assert len(store) == 1
    store.close()
    closed = RedisStore(DEAD, clock=clock.now, registry=None, fail_closed=True, probe_interval=3,
                        timeout=1.0)
    assert closed.take("", "k", limit) == 3.0
    clock.advance(2.9996)
    assert closed.take("", "k", limit) == 0.001  # rounded up, never 0
    clock.advance(0.0004)
    assert closed.take("", "k", limit) == 3.0  # the probe failed again: next one in 3 s
    closed.close()


async def test_a_dead_redis_on_the_aio_stack() -> None:
    """The aio path fails over the same way, fail-closed too; connect_async says False."""
    clock = FakeClock()
    registry = CollectorRegistry()
    store = RedisStore(DEAD, clock=clock.now, registry=registry, timeout=1.0, probe_interval=3)
    limit = RateLimit(limit=1, window=60)
    assert await store.take_async("", "k", limit) == 0.0
    assert await store.take_async("", "k", limit) == 60.0
    assert registry.get_sample_value(ERRORS) == 1
    assert await store.connect_async(timeout=1.0) is False
    assert registry.get_sample_value(ERRORS) == 2
    await store.aclose()
    closed = RedisStore(DEAD, clock=clock.now, registry=None, fail_closed=True, probe_interval=4,
                        timeout=1.0)
    assert await closed.take_async("", "k", limit) == 4.0
    await closed.aclose()
    assert closed.connect() is False


def test_only_an_async_client_gives_no_sync_path() -> None:
    """With only async_client=, a sync decision is a RuntimeError (not a silent fallback)."""
    async_client = redis.asyncio.Redis(host="127.0.0.1", port=1)
    store = RedisStore(async_client=async_client, registry=None)
    with pytest.raises(RuntimeError,
                       match=r"^RedisStore has no sync client: pass url or client$"):
        store.take("", "k", RateLimit(limit=1))


async def test_only_a_sync_client_gives_no_aio_path() -> None:
    """With only client=, an aio decision is a RuntimeError naming what to pass."""
    client = redis.Redis(host="127.0.0.1", port=1)
    store = RedisStore(client=client, registry=None)
    with pytest.raises(RuntimeError,
                       match=r"^RedisStore has no async client: pass url or async_client$"):
        await store.take_async("", "k", RateLimit(limit=1))
    client.close()


async def test_sync_and_aio_clients_are_built_once_and_closed(redis_server: RedisServer) -> None:
    """One sync client and one aio client per loop, reused; close()/aclose() drop them."""
    store = RedisStore(redis_server.url, timeout=1.0, registry=None)
    limit = RateLimit(limit=100)
    assert store.connect() is True
    script = store._script
    client = store._client
    assert store.take("", "k", limit) == 0.0
    assert store._script is script and store._client is client
    assert await store.connect_async(timeout=1.0) is True
    found = store._aio
    assert found is not None and found[0] is asyncio.get_running_loop()
    assert await store.take_async("", "k", limit) == 0.0
    assert store._aio is found
    await store.aclose()
    assert store._aio is None
    store.close()
    assert store._client is None and store._script is None
    assert store.take("", "k", limit) == 0.0  # a closed store builds a client again
    assert store._client is not None
    store.close()


async def test_the_fallback_keeps_scopes_and_keys_apart() -> None:
    """Redis down: each (scope, key) has its own local bucket, on both stacks."""
    clock = FakeClock()
    store = RedisStore(DEAD, clock=clock.now, registry=None, timeout=1.0)
    limit = RateLimit(limit=1, window=60)
    with capture_logs() as logs:
        assert [store.take("s", "a", limit), store.take("s", "b", limit),
                store.take("t", "a", limit), store.take("s", "a", limit)] == [0, 0, 0, 60]
    assert logs[0]["error"] == "ConnectionError"
    aio = RedisStore(DEAD, clock=clock.now, registry=None, timeout=1.0)
    with capture_logs() as logs:
        assert [await aio.take_async("s", "a", limit), await aio.take_async("s", "b", limit),
                await aio.take_async("t", "a", limit), await aio.take_async("s", "a", limit)] \
            == [0, 0, 0, 60]
    assert logs[0]["error"] == "ConnectionError"
    connecting = RedisStore(DEAD, registry=None, timeout=1.0)
    with capture_logs() as logs:
        assert connecting.connect() is False
    assert logs[0]["error"] == "ConnectionError"
    with capture_logs() as logs:
        assert await RedisStore(DEAD, registry=None).connect_async(timeout=1.0) is False
    assert logs[0]["error"] == "ConnectionError"
    store.close()
    await aio.aclose()
    connecting.close()


def test_the_error_counter_is_documented() -> None:
    """The counter's help text says what it counts."""
    registry = CollectorRegistry()
    _families_for(registry)
    family = next(m for m in registry.collect() if m.name == "octollm_ratelimit_store_errors")
    assert family.documentation == (
        "Rate-limit decisions the shared store failed to answer in time (the fallback "
        "decided them)")


async def test_clients_are_built_with_the_short_options_and_owned_ones_closed(
        redis_server: RedisServer) -> None:
    """Built clients carry the timeout; a given sync client is kept on close(); aclose() of a
    store that built no aio client is a no-op."""
    store = RedisStore(redis_server.url, timeout=0.7, registry=None)
    assert await store.take_async("", "k", RateLimit(limit=5)) == 0.0
    assert store._aio is not None
    kwargs = store._aio[1].connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.7
    await store.aclose()
    await store.aclose()
    given = redis.Redis(host="127.0.0.1", port=redis_server.port)
    mine = RedisStore(client=given, registry=None)
    mine.close()
    assert mine._client is given
    given.close()
    await RedisStore(redis_server.url, registry=None).aclose()


class Interrupted(BaseException):
    """What a signal handler might raise in the middle of a blocking call."""


def test_an_interrupted_sync_probe_frees_the_probe() -> None:
    """A sync probe interrupted by a BaseException gives no verdict: the next call probes."""
    clock = FakeClock()
    store = RedisStore(DEAD, clock=clock.now, registry=None, timeout=1.0, probe_interval=1)
    limit = RateLimit(limit=100)
    store.take("", "k", limit)  # down
    calls: list[int] = []

    def interrupted(**kwargs: object) -> None:
        calls.append(1)
        raise Interrupted

    store._script = interrupted
    clock.advance(1)
    with pytest.raises(Interrupted):
        store.take("", "k", limit)
    with pytest.raises(Interrupted):
        store.take("", "k", limit)  # asked again at once: the probe was freed
    assert calls == [1, 1]
    store._script = None
    store.close()
