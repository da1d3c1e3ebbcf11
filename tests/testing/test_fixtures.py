"""The plugin's fixtures in this repository's own run: handlers supplied by overriding them."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from octollm_grpc import errors
from octollm_grpc.client import RetryPolicy
from octollm_grpc.testing import FakeClock, FaultInjector
from tests.client.channels import aio_channel, sync_channel
from tests.testing.service import UNARY, Echo, aio_call, call

_C = grpc.StatusCode


@pytest.fixture
def echo() -> Echo:
    """The service both servers run (one call counter)."""
    return Echo()


@pytest.fixture
def grpc_handlers(echo: Echo) -> Sequence[grpc.GenericRpcHandler]:
    """Sync handlers for grpc_target."""
    return [echo.handler()]


@pytest.fixture
def aio_grpc_handlers(echo: Echo) -> Sequence[grpc.GenericRpcHandler]:
    """Coroutine handlers for aio_grpc_target (plain functions would bypass the injector)."""
    return [echo.handler(aio=True)]


def test_sync_client_survives_unavailable_twice(grpc_target: str, fault_injector: FaultInjector,
                                                fake_clock: FakeClock) -> None:
    """Two injected UNAVAILABLEs, then the handler: the resilient call succeeds on attempt 3."""
    fault_injector.fail_next(2, _C.UNAVAILABLE)
    channel = sync_channel(grpc_target, fake_clock, retry=RetryPolicy(max_attempts=3))
    assert channel.unary_unary(UNARY)(b"hi", timeout=5) == b"hi"
    assert [r.action for r in fault_injector.records] == ["fail", "fail", "pass"]
    assert len(fake_clock.sleeps) == 2
    channel.close()


async def test_aio_client_honours_pushback(aio_grpc_target: str, fault_injector: FaultInjector,
                                           fake_clock: FakeClock, echo: Echo) -> None:
    """An async test dials aio_grpc_target: the client waits the 0.75 s the server asked for."""
    fault_injector.pushback_next(1, 0.75, error=errors.CapacityExceededError("busy"))
    async with aio_channel(aio_grpc_target, fake_clock,
                           retry=RetryPolicy(max_attempts=2)) as channel:
        assert await aio_call(channel, UNARY) == [b"hi"]
    assert fake_clock.sleeps == [0.75] and echo.runs == 1


def test_both_servers_share_the_one_injector(grpc_target: str, aio_grpc_target: str,
                                             fault_injector: FaultInjector) -> None:
    """One plan serves the sync and the aio server alike: the first call takes the fault."""
    fault_injector.fail_next(1, _C.ABORTED)
    with grpc.insecure_channel(aio_grpc_target) as aio_side:
        with pytest.raises(grpc.RpcError) as caught:
            call(aio_side, UNARY)
    with grpc.insecure_channel(grpc_target) as sync_side:
        assert call(sync_side, UNARY) == [b"hi"]
    assert caught.value.code() is _C.ABORTED
    assert [r.action for r in fault_injector.records] == ["fail", "pass"]
