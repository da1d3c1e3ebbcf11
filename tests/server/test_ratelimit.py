"""Token-bucket rate limiting: burst, retry delay, refill, per-method limits, bounded memory."""

from __future__ import annotations

import sys

import grpc
import pytest
from google.rpc import error_details_pb2
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.server import RateLimit, RateLimiter, ServerMetrics, server_interceptors
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server._ratelimit import peer_host
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._limits import PUSHBACK_KEY
from octollm_grpc.testing import FakeClock
from tests.server.harness import Outcome, Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server


def test_burst_then_reject_with_delay_then_refill() -> None:
    """Burst of 3 passes, the 4th waits exactly one token's time, tokens come back on time."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(limit=1, window=1, burst=3), clock=clock.now)
    scope, limit = limiter.limit_for("/a.B/C") or ("?", RateLimit(1))
    assert [limiter.acquire(scope, limit, "k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire(scope, limit, "k") == 1.0
    clock.advance(0.25)
    assert limiter.acquire(scope, limit, "k") == 0.75
    clock.advance(0.75)
    assert limiter.acquire(scope, limit, "k") == 0.0
    assert limiter.acquire(scope, limit, "k") == 1.0
    clock.advance(10)  # refills to the burst, not beyond
    assert [limiter.acquire(scope, limit, "k") for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_rejection_is_a_rate_limit_error_with_the_wait() -> None:
    """check() raises RateLimitError(limit, window, retry_after) for a 10-per-minute limit."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(limit=10, window=60, burst=1), clock=clock.now)
    limiter.check("", RateLimit(limit=10, window=60, burst=1), "k")
    with pytest.raises(e.RateLimitError) as caught:
        limiter.check("", RateLimit(limit=10, window=60, burst=1), "k")
    assert caught.value.retry_after == 6.0
    assert caught.value.details == {"limit": 10, "window": 60}


def test_keys_are_independent_and_methods_override() -> None:
    """Each caller has its own bucket; a method's own limit has its own; None exempts."""
    clock = FakeClock()
    limiter = RateLimiter(
        RateLimit(limit=1, burst=1),
        methods={"/a.B/Heavy": RateLimit(limit=1, window=10, burst=1), "/a.B/Free": None},
        clock=clock.now,
    )
    default = limiter.limit_for("/a.B/Light")
    heavy = limiter.limit_for("/a.B/Heavy")
    assert limiter.limit_for("/a.B/Free") is None
    assert default is not None and heavy is not None and default[0] != heavy[0]
    assert limiter.acquire(*default, "alice") == 0.0
    assert limiter.acquire(*default, "bob") == 0.0
    assert limiter.acquire(*default, "alice") == 1.0
    assert limiter.acquire(*heavy, "alice") == 0.0
    assert limiter.acquire(*heavy, "alice") == 10.0
    assert RateLimiter(None).limit_for("/a.B/C") is None


def test_hundred_thousand_keys_stay_bounded() -> None:
    """100 000 distinct callers: at most max_keys buckets are held; recent ones stay exact."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(limit=1, burst=1), max_keys=1000, clock=clock.now)
    scope_limit = limiter.limit_for("/a.B/C")
    assert scope_limit is not None
    held = []
    for i in range(100_000):
        assert limiter.acquire(*scope_limit, f"caller-{i}") == 0.0
        if i % 10_000 == 0:
            held.append(len(limiter))
    assert len(limiter) == 1000
    assert max(held) <= 1000
    assert sys.getsizeof(limiter.store._buckets)  # type: ignore[attr-defined] < 200_000
    assert limiter.acquire(*scope_limit, "caller-99999") == 1.0  # still remembered: rejected
    assert limiter.acquire(*scope_limit, "caller-0") == 0.0  # evicted long ago: fresh bucket


def test_caller_key_from_metadata_or_peer_host() -> None:
    """The key is the configured metadata value, else the peer without its port."""
    limiter = RateLimiter(RateLimit(1), key_metadata="X-Api-Key")
    assert limiter.key_for([("x-api-key", "tenant-1")], lambda: "ipv4:1.2.3.4:5") == "tenant-1"
    assert limiter.key_for([("other", "v")], lambda: "ipv4:1.2.3.4:5") == "ipv4:1.2.3.4"
    assert peer_host("ipv6:[::1]:4242") == "ipv6:[::1]"
    assert peer_host("unix:/tmp/sock") == "unix:/tmp/sock"


@pytest.mark.parametrize("kwargs", [
    {"limit": 0}, {"limit": 1, "window": 0}, {"limit": 1, "burst": 0}, {"limit": 1.5},
    {"limit": True},
])
def test_invalid_limits_are_rejected(kwargs: dict[str, object]) -> None:
    """RateLimit validates its fields when built."""
    with pytest.raises(ValueError):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def _check_rejected(outcome: Outcome) -> None:
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    decoded = from_rpc_error(outcome.error)
    assert isinstance(decoded, e.RateLimitError)
    assert decoded.retry_after == 2
    assert outcome.trailers[PUSHBACK_KEY] == "2000"
    kinds = {d.type_url.rsplit("/", 1)[1] for d in decoded.rich_status.details}
    assert {"google.rpc.RetryInfo", "google.rpc.QuotaFailure"} <= kinds
    quota = next(d for d in decoded.rich_status.details if d.type_url.endswith("QuotaFailure"))
    failure = error_details_pb2.QuotaFailure()
    quota.Unpack(failure)
    assert failure.violations[0].description == "Rate limit exceeded: 1 requests per 2s"


def test_sync_server_rejects_over_the_limit() -> None:
    """Sync: burst passes, the next call is RESOURCE_EXHAUSTED with RetryInfo, then refills."""
    clock = FakeClock()
    registry = CollectorRegistry()
    limiter = RateLimiter(RateLimit(limit=1, window=2, burst=2), clock=clock.now)
    interceptors = server_interceptors(metrics=ServerMetrics(registry), rate_limit=limiter)
    with capture_logs() as logs, sync_server(sync_handlers(Script()), interceptors) as target:
        assert [call_sync(target, "unary").error for _ in range(2)] == [None, None]
        rejected = call_sync(target, "unary")
        clock.advance(2)
        again = call_sync(target, "unary")
    _check_rejected(rejected)
    assert again.error is None
    assert [(x["log_level"], x["error_code"]) for x in logs] == [
        ("warning", "RATE_LIMIT_EXCEEDED")]
    assert registry.get_sample_value("octollm_errors_total", {
        "error_type": "RATE_LIMIT_EXCEEDED", "component": "grpc_server"}) == 1


async def test_aio_server_rejects_per_metadata_key_and_method() -> None:
    """aio: limits are per API key; an exempt method is never limited."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(limit=1, window=2, burst=1), key_metadata="x-api-key",
                          methods={"/test.Shapes/ServerStream": None}, clock=clock.now)
    interceptors = server_aio.server_interceptors(metrics=False, rate_limit=limiter)
    async with aio_server(aio_handlers(Script()), interceptors) as target:
        first = await call_aio(target, "unary", [("x-api-key", "a")])
        other = await call_aio(target, "unary", [("x-api-key", "b")])
        rejected = await call_aio(target, "client_stream", [("x-api-key", "a")])
        exempt = [await call_aio(target, "server_stream", [("x-api-key", "a")])
                  for _ in range(3)]
    assert first.error is None and other.error is None
    _check_rejected(rejected)
    assert [o.error for o in exempt] == [None, None, None]
