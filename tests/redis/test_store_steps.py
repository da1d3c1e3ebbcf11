"""RedisStore under a cancelled probe and a stepped clock, against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc.server import RateLimit
from octollm_grpc.server.ratelimit_redis import RedisStore
from octollm_grpc.testing import FakeClock
from tests.redis.server import RedisServer

ERRORS = "octollm_ratelimit_store_errors_total"
SLACK = 1.0


async def test_a_cancelled_probe_does_not_keep_decisions_local(redis_server: RedisServer) -> None:
    """The probe cancelled while Redis hangs: the next due call probes again and recovers."""
    clock = FakeClock()
    registry = CollectorRegistry()
    store = RedisStore(redis_server.url, timeout=SLACK, clock=clock.now, probe_interval=2.0,
                       registry=registry)
    limit = RateLimit(limit=100)
    try:
        with capture_logs() as logs:
            assert await store.take_async("", "k", limit) == 0.0
            redis_server.kill()
            assert await store.take_async("", "k", limit) == 0.0  # local, the outage seen
            assert not store.available
            assert registry.get_sample_value(ERRORS) == 1
            redis_server.start()
            redis_server.pause()  # the probe will hang until its deadline
            clock.advance(2.0)
            probe = asyncio.ensure_future(store.take_async("", "k", limit))
            await asyncio.sleep(0.05)
            assert not probe.done()
            probe.cancel()
            with pytest.raises(asyncio.CancelledError):
                await probe
            redis_server.resume()
            # The cancelled probe gave no verdict: nothing counted, and the next call asks.
            assert registry.get_sample_value(ERRORS) == 1
            assert await store.take_async("", "k", limit) == 0.0
            assert store.available
            assert redis_server.client().dbsize() == 1
        events = [x["event"] for x in logs if str(x["event"]).startswith("ratelimit_store")]
        assert events == ["ratelimit_store_unavailable", "ratelimit_store_recovered"]
    finally:
        redis_server.resume()
        await store.aclose()


def test_a_clock_step_back_leaves_an_active_bucket_empty_not_in_debt(
        redis_server: RedisServer) -> None:
    """Redis's clock one hour back: a drained caller waits one token (1 s), not 3,601 s."""
    now = [1_000_000.0]
    store = RedisStore(redis_server.url, timeout=SLACK, time_source=lambda: now[0],
                       registry=None)
    limit = RateLimit(limit=10, window=10)  # one token a second, a burst of ten
    try:
        assert [store.take("", "active", limit) for _ in range(10)] == [0.0] * 10
        assert store.take("", "active", limit) == 1.0
        now[0] -= 3600.0
        assert store.take("", "active", limit) == 1.0  # empty: one interval, as before the step
        assert store.take("", "new", limit) == 0.0
        now[0] += 0.5
        assert store.take("", "active", limit) == 0.5
        now[0] += 0.5
        # Exactly one token refilled: the step gave the active caller no extra burst either.
        assert store.take("", "active", limit) == 0.0
        assert store.take("", "active", limit) == 1.0
    finally:
        store.close()


def test_a_clock_step_forward_refills_at_most_one_burst(redis_server: RedisServer) -> None:
    """Redis's clock one hour ahead: the bucket is full (ten calls), never more than that."""
    now = [1_000_000.0]
    store = RedisStore(redis_server.url, timeout=SLACK, time_source=lambda: now[0],
                       registry=None)
    limit = RateLimit(limit=10, window=10)
    try:
        assert [store.take("", "k", limit) for _ in range(10)] == [0.0] * 10
        now[0] += 3600.0
        assert [store.take("", "k", limit) for _ in range(10)] == [0.0] * 10
        assert store.take("", "k", limit) == 1.0
    finally:
        store.close()
