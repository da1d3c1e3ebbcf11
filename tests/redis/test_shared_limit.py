"""Replicas (real servers, both stacks) sharing one limit through a real Redis, and outages."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from google.rpc import error_details_pb2
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.server import RateLimit, RateLimiter, server_interceptors
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server._ratelimit import MemoryStore
from octollm_grpc.server.ratelimit_redis import RedisStore
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._limits import PUSHBACK_KEY
from octollm_grpc.testing import FakeClock
from tests.redis.server import RedisServer
from tests.server.harness import Outcome, Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server

LIMIT = RateLimit(limit=5, window=3600, burst=5)  # one token per 720 s: no refill in a test
ERRORS = "octollm_ratelimit_store_errors_total"
#: The deadline of stores whose test is not about it: a loaded host must not turn them local.
SLACK = 1.0


def _codes(outcomes: list[Outcome]) -> list[str]:
    return ["OK" if o.error is None else o.error.code().name  # type: ignore[attr-defined]
            for o in outcomes]


def _check_rejected(outcome: Outcome, retry_after: float) -> None:
    """The rejection carries the same pushback, RetryInfo and QuotaFailure as the local one."""
    assert outcome.error is not None
    decoded = from_rpc_error(outcome.error)
    assert isinstance(decoded, e.RateLimitError)
    assert decoded.retry_after == retry_after
    assert outcome.trailers[PUSHBACK_KEY] == str(int(retry_after * 1000))
    kinds = {d.type_url.rsplit("/", 1)[1] for d in decoded.rich_status.details}
    assert {"google.rpc.RetryInfo", "google.rpc.QuotaFailure"} <= kinds
    quota = next(d for d in decoded.rich_status.details if d.type_url.endswith("QuotaFailure"))
    failure = error_details_pb2.QuotaFailure()
    quota.Unpack(failure)
    assert failure.violations[0].description == "Rate limit exceeded: 5 requests per 3600s"


@contextlib.contextmanager
def _sync_replicas(stores: list[RedisStore] | list[MemoryStore]) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        targets = [stack.enter_context(sync_server(sync_handlers(Script()), server_interceptors(
            metrics=False, rate_limit=RateLimiter(LIMIT, store=store)))) for store in stores]
        yield targets


def test_two_sync_replicas_admit_one_limit_between_them(redis_server: RedisServer) -> None:
    """Sync: two servers on one Redis admit 5 calls in all, not 5 each; the rest get pushback."""
    clock = FakeClock()
    stores = [RedisStore(redis_server.url, timeout=SLACK, time_source=clock.now, registry=None)
              for _ in range(2)]
    try:
        with _sync_replicas(stores) as targets:
            shared = [call_sync(targets[i % 2], "unary") for i in range(12)]
        with _sync_replicas([MemoryStore(), MemoryStore()]) as targets:
            apart = [call_sync(targets[i % 2], "unary") for i in range(12)]
    finally:
        for store in stores:
            store.close()
    assert _codes(shared) == ["OK"] * 5 + ["RESOURCE_EXHAUSTED"] * 7
    _check_rejected(shared[5], 720.0)
    _check_rejected(shared[6], 720.0)
    assert _codes(apart).count("OK") == 10  # what per-process buckets let through


async def test_two_aio_replicas_admit_one_limit_between_them(redis_server: RedisServer) -> None:
    """aio: the same with redis.asyncio; admitted calls of all four shapes count alike."""
    clock = FakeClock()
    stores = [RedisStore(redis_server.url, timeout=SLACK, time_source=clock.now, registry=None)
              for _ in range(2)]
    shapes = ("unary", "server_stream", "client_stream", "bidi_stream")
    try:
        async with contextlib.AsyncExitStack() as stack:
            targets = [await stack.enter_async_context(aio_server(
                aio_handlers(Script()), server_aio.server_interceptors(
                    metrics=False, rate_limit=RateLimiter(LIMIT, store=store))))
                for store in stores]
            # Rejections only on unary-request shapes: a grpc.aio client whose bidi call the
            # server ends before the requests went out may report INTERNAL ("Failed
            # execute_batch") instead of the server's status (grpcio 1.85, any limiter).
            order = [*shapes, "unary", *(["unary", "server_stream"] * 4)]
            shared = [await call_aio(targets[i % 2], shape) for i, shape in enumerate(order)]
            clock.advance(720)  # one token's time: one more call passes, on either replica
            later = [await call_aio(targets[1], "unary"), await call_aio(targets[0], "unary")]
    finally:
        for store in stores:
            await store.aclose()
    assert _codes(shared) == ["OK"] * 5 + ["RESOURCE_EXHAUSTED"] * 8
    _check_rejected(shared[5], 720.0)
    _check_rejected(shared[6], 720.0)
    assert _codes(later) == ["OK", "RESOURCE_EXHAUSTED"]


def test_sync_calls_survive_redis_being_killed(redis_server: RedisServer) -> None:
    """Sync: Redis killed mid-run, calls are answered at once (local buckets); back after it."""
    clock = FakeClock()
    registry = CollectorRegistry()
    store = RedisStore(redis_server.url, timeout=SLACK, clock=clock.now, registry=registry)
    other_replica = RedisStore(redis_server.url, timeout=SLACK, registry=None)
    limiter = RateLimiter(LIMIT, store=store)
    try:
        with capture_logs() as logs, sync_server(sync_handlers(Script()), server_interceptors(
                metrics=False, rate_limit=limiter)) as target:
            before = [call_sync(target, "unary") for _ in range(2)]
            redis_server.kill()
            started = time.perf_counter()
            during = [call_sync(target, "unary") for _ in range(7)]
            slowest = time.perf_counter() - started
            redis_server.start()
            clock.advance(1.0)  # the next call probes Redis again
            after = [call_sync(target, "unary") for _ in range(6)]
            # The shared bucket is back: another replica sees the 5 tokens used.
            assert 700 < other_replica.take("", "ipv4:127.0.0.1", LIMIT) <= 720.0
    finally:
        store.close()
        other_replica.close()
    assert _codes(before) == ["OK"] * 2
    # The local bucket starts full: 5 pass, then the local limit holds.
    assert _codes(during) == ["OK"] * 5 + ["RESOURCE_EXHAUSTED"] * 2
    assert slowest < 3.0, slowest  # 7 calls, no call waits on the dead Redis
    assert _codes(after) == ["OK"] * 5 + ["RESOURCE_EXHAUSTED"]
    events = [x["event"] for x in logs if str(x["event"]).startswith("ratelimit_store")]
    assert events == ["ratelimit_store_unavailable", "ratelimit_store_recovered"]
    assert registry.get_sample_value(ERRORS) == 1


async def test_aio_calls_survive_redis_hanging_and_dying(redis_server: RedisServer) -> None:
    """aio: Redis hung (SIGSTOP) then killed: each call answered within the timeout; recovery."""
    clock = FakeClock()
    registry = CollectorRegistry()
    store = RedisStore(redis_server.url, clock=clock.now, timeout=0.05, registry=registry)
    limiter = RateLimiter(RateLimit(limit=1000), store=store)
    interceptors = server_aio.server_interceptors(metrics=False, rate_limit=limiter)
    latencies: list[float] = []
    try:
        with capture_logs() as logs:
            async with aio_server(aio_handlers(Script()), interceptors) as target:
                assert (await call_aio(target, "unary")).error is None
                redis_server.pause()
                for _ in range(5):
                    started = time.perf_counter()
                    assert (await call_aio(target, "unary")).error is None
                    latencies.append(time.perf_counter() - started)
                clock.advance(1.0)
                redis_server.resume()
                redis_server.kill()
                assert (await call_aio(target, "unary")).error is None  # probe fails: local
                redis_server.start()
                clock.advance(1.0)
                assert (await call_aio(target, "unary")).error is None  # probe answers
                assert redis_server.client().dbsize() == 1
    finally:
        if redis_server.process is not None and redis_server.process.poll() is None:
            redis_server.resume()
        await store.aclose()
    # The first call after the hang waits for the timeout (50 ms); none waits for Redis longer.
    assert latencies[0] >= 0.045, latencies
    assert max(latencies) < 1.0, latencies
    events = [x["event"] for x in logs if str(x["event"]).startswith("ratelimit_store")]
    assert events == ["ratelimit_store_unavailable", "ratelimit_store_recovered"]
    assert registry.get_sample_value(ERRORS) == 2  # the hung call and the failed probe
