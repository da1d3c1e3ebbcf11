"""The retry budget on real channels, sync and aio: no retry storm against a dead server."""

from __future__ import annotations

import asyncio
from concurrent import futures

import pytest

from octollm_grpc import errors
from octollm_grpc.client import RetryBudget, RetryPolicy
from octollm_grpc.testing import FakeClock
from tests.client.backend import FAIL, UNARY, Backend
from tests.client.channels import aio_channel, sync_channel
from tests.servers import sync_server

CALLERS = 50
POLICY = RetryPolicy(max_attempts=4)


def _sync_amplification(clock: FakeClock, budget: RetryBudget | None) -> float:
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        call = sync_channel(target, clock, retry=POLICY, budget=budget).unary_unary(UNARY)
        with futures.ThreadPoolExecutor(CALLERS) as pool:
            outcomes = [f.exception(30) for f in
                        [pool.submit(call, b"x", timeout=60) for _ in range(CALLERS)]]
    assert all(isinstance(o, errors.NetworkError) for o in outcomes)
    return backend.count() / CALLERS


async def _aio_amplification(clock: FakeClock, budget: RetryBudget | None) -> float:
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, retry=POLICY, budget=budget) as channel:
            call = channel.unary_unary(UNARY)
            outcomes = await asyncio.gather(*[call(b"x", timeout=60) for _ in range(CALLERS)],
                                            return_exceptions=True)
    assert all(isinstance(o, errors.NetworkError) for o in outcomes)
    return backend.count() / CALLERS


def test_sync_budget_keeps_amplification_near_1(clock: FakeClock) -> None:
    """Sync: 50 concurrent callers, 100% UNAVAILABLE, 4 attempts: budget on -> <= 1.2 x."""
    assert _sync_amplification(clock, RetryBudget(max_tokens=10, token_ratio=0.1)) <= 1.2


def test_sync_without_budget_amplification_is_max_attempts(clock: FakeClock) -> None:
    """Sync: the same storm with the budget off sends max_attempts per call (4 x)."""
    assert _sync_amplification(clock, None) == pytest.approx(4.0)


async def test_aio_budget_keeps_amplification_near_1(clock: FakeClock) -> None:
    """Aio: 50 concurrent callers, 100% UNAVAILABLE, 4 attempts: budget on -> <= 1.2 x."""
    assert await _aio_amplification(clock, RetryBudget(max_tokens=10, token_ratio=0.1)) <= 1.2


async def test_aio_without_budget_amplification_is_max_attempts(clock: FakeClock) -> None:
    """Aio: the same storm with the budget off sends max_attempts per call (4 x)."""
    assert await _aio_amplification(clock, None) == pytest.approx(4.0)


def test_budget_is_shared_by_sync_and_aio_channels_to_a_target(clock: FakeClock) -> None:
    """Channels to one target share one budget: drained by sync calls, aio calls stop retrying."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        shared = RetryBudget.for_target(target)
        assert RetryBudget.for_target(target) is shared
        sync = sync_channel(target, clock, retry=POLICY, budget=shared)
        for _ in range(5):
            with pytest.raises(errors.NetworkError):
                sync.unary_unary(UNARY)(b"x")
        assert not shared.allows_retry()
        backend.attempts.clear()

        async def one_aio_call() -> None:
            async with aio_channel(target, clock, retry=POLICY, budget=shared) as channel:
                with pytest.raises(errors.NetworkError):
                    await channel.unary_unary(UNARY)(b"x")

        asyncio.run(one_aio_call())
    assert backend.count() == 1
