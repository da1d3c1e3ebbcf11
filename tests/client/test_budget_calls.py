"""The retry budget on real channels, sync and aio: no retry storm against a dead server.

The dead server is the testing kit's: ``grpc_target`` serves a healthy handler and the plugin's
``fault_injector`` fails every attempt with ``UNAVAILABLE`` and counts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent import futures

import grpc
import pytest

from octollm_grpc import errors
from octollm_grpc.client import RetryBudget, RetryPolicy
from octollm_grpc.testing import FakeClock, FaultInjector
from tests.client.backend import SUCCEED, UNARY, Backend
from tests.client.channels import aio_channel, sync_channel

CALLERS = 50
POLICY = RetryPolicy(max_attempts=4)
#: More attempts than any test here makes: "the server is down".
EVERY_ATTEMPT = 10_000


@pytest.fixture
def grpc_handlers() -> Sequence[grpc.GenericRpcHandler]:
    """A healthy backend: every failure comes from the fault injector."""
    return [Backend([SUCCEED]).handler()]


@pytest.fixture
def down(fault_injector: FaultInjector) -> FaultInjector:
    """The plugin's fault injector, failing every attempt with UNAVAILABLE."""
    fault_injector.fail_next(EVERY_ATTEMPT, grpc.StatusCode.UNAVAILABLE)
    return fault_injector


def _sync_amplification(target: str, down: FaultInjector, clock: FakeClock,
                        budget: RetryBudget | None) -> float:
    call = sync_channel(target, clock, retry=POLICY, budget=budget).unary_unary(UNARY)
    with futures.ThreadPoolExecutor(CALLERS) as pool:
        outcomes = [f.exception(30) for f in
                    [pool.submit(call, b"x", timeout=60) for _ in range(CALLERS)]]
    assert all(isinstance(o, errors.NetworkError) for o in outcomes)
    return down.count(UNARY, "fail") / CALLERS


async def _aio_amplification(target: str, down: FaultInjector, clock: FakeClock,
                             budget: RetryBudget | None) -> float:
    async with aio_channel(target, clock, retry=POLICY, budget=budget) as channel:
        call = channel.unary_unary(UNARY)
        outcomes = await asyncio.gather(*[call(b"x", timeout=60) for _ in range(CALLERS)],
                                        return_exceptions=True)
    assert all(isinstance(o, errors.NetworkError) for o in outcomes)
    return down.count(UNARY, "fail") / CALLERS


def test_sync_budget_keeps_amplification_near_1(grpc_target: str, down: FaultInjector,
                                                clock: FakeClock) -> None:
    """Sync: 50 concurrent callers, 100% UNAVAILABLE, 4 attempts: budget on -> <= 1.2 x."""
    budget = RetryBudget(max_tokens=10, token_ratio=0.1)
    assert _sync_amplification(grpc_target, down, clock, budget) <= 1.2


def test_sync_without_budget_amplification_is_max_attempts(grpc_target: str, down: FaultInjector,
                                                           clock: FakeClock) -> None:
    """Sync: the same storm with the budget off sends max_attempts per call (4 x)."""
    assert _sync_amplification(grpc_target, down, clock, None) == pytest.approx(4.0)


async def test_aio_budget_keeps_amplification_near_1(grpc_target: str, down: FaultInjector,
                                                     clock: FakeClock) -> None:
    """Aio: 50 concurrent callers, 100% UNAVAILABLE, 4 attempts: budget on -> <= 1.2 x."""
    budget = RetryBudget(max_tokens=10, token_ratio=0.1)
    assert await _aio_amplification(grpc_target, down, clock, budget) <= 1.2


async def test_aio_without_budget_amplification_is_max_attempts(
        grpc_target: str, down: FaultInjector, clock: FakeClock) -> None:
    """Aio: the same storm with the budget off sends max_attempts per call (4 x)."""
    assert await _aio_amplification(grpc_target, down, clock, None) == pytest.approx(4.0)


def test_budget_is_shared_by_sync_and_aio_channels_to_a_target(
        grpc_target: str, down: FaultInjector, clock: FakeClock) -> None:
    """Channels to one target share one budget: drained by sync calls, aio calls stop retrying."""
    shared = RetryBudget.for_target(grpc_target)
    assert RetryBudget.for_target(grpc_target) is shared
    sync = sync_channel(grpc_target, clock, retry=POLICY, budget=shared)
    for _ in range(5):
        with pytest.raises(errors.NetworkError):
            sync.unary_unary(UNARY)(b"x")
    assert not shared.allows_retry()
    down.clear()
    down.fail_next(EVERY_ATTEMPT, grpc.StatusCode.UNAVAILABLE)

    async def one_aio_call() -> None:
        async with aio_channel(grpc_target, clock, retry=POLICY, budget=shared) as channel:
            with pytest.raises(errors.NetworkError):
                await channel.unary_unary(UNARY)(b"x")

    asyncio.run(one_aio_call())
    assert down.count() == 1
