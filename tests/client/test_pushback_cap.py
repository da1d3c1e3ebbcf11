"""Server pushback is capped by the policy's ``max_pushback`` (default 30 s).

A server's 1-day ``grpc-retry-pushback-ms`` must not leave a call with no deadline asleep for
a day. Past ``max_pushback`` the call does not retry: it raises the typed error at once, with
the server's advice as ``retry_after``. Fake clock and sleep: nothing waits for real.
"""

from __future__ import annotations

import random

import grpc
import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors as e
from octollm_grpc.client import RetryPolicy, resilient_channel
from octollm_grpc.client import aio as client_aio
from octollm_grpc.status import to_status
from octollm_grpc.status._limits import PUSHBACK_KEY
from octollm_grpc.testing import FakeClock
from tests.client.backend import UNARY, Backend, Reply
from tests.servers import sync_server

DAY_MS = "86400000"


def _reply(pushback_ms: str) -> Reply:
    return Reply(grpc.StatusCode.UNAVAILABLE, messages=0, trailers=((PUSHBACK_KEY, pushback_ms),))


def _rate_limited(retry_after: float) -> Reply:
    # What our own server sends: RetryInfo in the rich status plus the pushback header.
    status = to_status(e.RateLimitError(limit=1, window=1, retry_after=retry_after))
    return Reply(status.code, messages=0, message=status.details,
                 trailers=status.trailing_metadata)


def _sync_call(backend: Backend, policy: RetryPolicy, clock: FakeClock) -> e.OctoLLMError:
    with sync_server([backend.handler()]) as target, resilient_channel(
            target, retry=policy, budget=None, breaker=None, clock=clock.now,
            sleep=clock.sleep, rng=random.Random(2), registry=CollectorRegistry()) as channel:
        with pytest.raises(e.OctoLLMError) as raised:
            channel.unary_unary(UNARY)(b"x")  # no deadline
    return raised.value


async def _aio_call(backend: Backend, policy: RetryPolicy, clock: FakeClock) -> e.OctoLLMError:
    with sync_server([backend.handler()]) as target:
        async with client_aio.resilient_channel(
                target, retry=policy, budget=None, breaker=None, clock=clock.now,
                sleep=clock.async_sleep, rng=random.Random(2),
                registry=CollectorRegistry()) as channel:
            with pytest.raises(e.OctoLLMError) as raised:
                await channel.unary_unary(UNARY)(b"x")
    return raised.value


def test_default_max_pushback_is_thirty_seconds() -> None:
    """The default cap, and it is validated like the other times."""
    assert RetryPolicy().max_pushback == 30.0
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="max_pushback"):
            RetryPolicy(max_pushback=bad)


def test_sync_day_long_pushback_raises_at_once() -> None:
    """Sync, no deadline, a 1-day pushback: one attempt, no sleep, retry_after = one day."""
    backend, clock = Backend([_reply(DAY_MS)]), FakeClock()
    error = _sync_call(backend, RetryPolicy(), clock)
    assert type(error) is e.NetworkError
    assert error.retry_after == 86400
    assert len(backend.attempts) == 1
    assert clock.sleeps == []


async def test_aio_day_long_pushback_raises_at_once() -> None:
    """aio, the same."""
    backend, clock = Backend([_reply(DAY_MS)]), FakeClock()
    error = await _aio_call(backend, RetryPolicy(), clock)
    assert error.retry_after == 86400
    assert len(backend.attempts) == 1
    assert clock.sleeps == []


def test_sync_retry_info_beyond_the_cap_raises_with_it() -> None:
    """Our own server's RateLimitError(retry_after=3600): not retried, retry_after kept."""
    backend, clock = Backend([_rate_limited(3600)]), FakeClock()
    error = _sync_call(backend, RetryPolicy(), clock)
    assert type(error) is e.RateLimitError
    assert error.retry_after == 3600
    assert len(backend.attempts) == 1
    assert clock.sleeps == []


async def test_aio_pushback_within_a_raised_cap_is_honoured() -> None:
    """aio with max_pushback=7200: the hour-long pushback is waited (fake sleep), then retried."""
    backend, clock = Backend([_rate_limited(3600)]), FakeClock()
    error = await _aio_call(backend, RetryPolicy(max_attempts=2, max_pushback=7200), clock)
    assert error.retry_after == 3600
    assert len(backend.attempts) == 2
    assert clock.sleeps == [3600]


def test_sync_pushback_within_the_default_cap_is_honoured() -> None:
    """Sync: a 20 s pushback is under 30 s: waited (fake sleep), then retried."""
    backend, clock = Backend([_reply("20000")]), FakeClock()
    _sync_call(backend, RetryPolicy(max_attempts=2), clock)
    assert len(backend.attempts) == 2
    assert clock.sleeps == [20]
