"""A server's DEADLINE_EXCEEDED marked as the caller's own budget is no breaker failure."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc.client import BreakerSettings, CircuitState
from octollm_grpc.client._breaker import ChannelBreakers as CircuitBreakers
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.status import callers_budget, to_status
from octollm_grpc.status._budget import CALLERS_BUDGET, TIMEOUT_CAUSE_KEY, spent_callers_budget
from octollm_grpc.testing import FakeClock
from tests.client.channels import aio_channel, sync_channel
from tests.servers import aio_server, sync_server

METHOD = "/test.Budget/Run"
CALLS = 5


def _timeout(marked: bool) -> errors.TimeoutError:
    error = errors.TimeoutError("task", 1)
    return callers_budget(error) if marked else error


def _sync_handler() -> grpc.GenericRpcHandler:
    def run(request: bytes, context: Any) -> bytes:
        raise _timeout(request == b"marked")

    return grpc.method_handlers_generic_handler("test.Budget", {
        "Run": grpc.unary_unary_rpc_method_handler(run)})


def _aio_handler() -> grpc.GenericRpcHandler:
    async def run(request: bytes, context: Any) -> bytes:
        raise _timeout(request == b"marked")

    return grpc.method_handlers_generic_handler("test.Budget", {
        "Run": grpc.unary_unary_rpc_method_handler(run)})


def _breakers(target: str) -> CircuitBreakers:
    return CircuitBreakers(target, BreakerSettings(failure_threshold=2),
                           registry=CollectorRegistry())


def test_the_mark_is_read_only_from_a_deadline_exceeded_status_of_the_same_code() -> None:
    """Only DEADLINE_EXCEEDED with ErrorInfo timeout_cause=callers_budget counts as marked."""
    marked = to_status(callers_budget(errors.TimeoutError("task", 1))).trailing_metadata
    plain = to_status(errors.TimeoutError("task", 1)).trailing_metadata
    other_code = to_status(callers_budget(errors.ArmUnavailableError("x"))).trailing_metadata
    deadline = grpc.StatusCode.DEADLINE_EXCEEDED
    assert spent_callers_budget(deadline, marked) is True
    assert spent_callers_budget(deadline, plain) is False
    assert spent_callers_budget(grpc.StatusCode.UNAVAILABLE, marked) is False
    # Details that claim another code than the call's are not this call's.
    assert spent_callers_budget(deadline, other_code) is False
    assert spent_callers_budget(deadline, None) is False
    assert spent_callers_budget(deadline, [("grpc-status-details-bin", b"\xff\x00garbage")]) \
        is False
    assert spent_callers_budget(deadline, [("other", "x"), *marked]) is True
    assert callers_budget(errors.TimeoutError("t", 1)).details[TIMEOUT_CAUSE_KEY] \
        == CALLERS_BUDGET == "callers_budget"


@pytest.mark.parametrize("marked", [True, False])
def test_sync_channel_counts_only_unmarked_timeouts(marked: bool) -> None:
    """Marked timeouts (caller's budget) leave the breaker closed; unmarked ones open it."""
    clock = FakeClock()
    with sync_server([_sync_handler()], interceptors=server_interceptors()) as target:
        breakers = _breakers(target)
        channel = sync_channel(target, clock, breaker=breakers)
        call = channel.unary_unary(METHOD)
        for _ in range(CALLS):
            with pytest.raises(errors.OctoLLMError) as caught:
                call(b"marked" if marked else b"plain")
            if not isinstance(caught.value, errors.CircuitOpenError):
                assert isinstance(caught.value, errors.TimeoutError)
        channel.close()
    state = breakers.for_method(METHOD).state
    assert state is (CircuitState.CLOSED if marked else CircuitState.OPEN)


@pytest.mark.parametrize("marked", [True, False])
async def test_aio_channel_counts_only_unmarked_timeouts(marked: bool) -> None:
    """The same on grpc.aio, against an aio server: the mark keeps the breaker closed."""
    clock = FakeClock()
    async with aio_server([_aio_handler()],
                          interceptors=server_aio.server_interceptors()) as target:
        breakers = _breakers(target)
        async with aio_channel(target, clock, breaker=breakers) as channel:
            call = channel.unary_unary(METHOD)
            seen = []
            for _ in range(CALLS):
                with pytest.raises(errors.OctoLLMError) as caught:
                    await call(b"marked" if marked else b"plain")
                seen.append(type(caught.value))
    state = breakers.for_method(METHOD).state
    if marked:
        assert state is CircuitState.CLOSED
        assert seen == [errors.TimeoutError] * CALLS
    else:
        assert state is CircuitState.OPEN
        assert seen == [errors.TimeoutError] * 2 + [errors.CircuitOpenError] * 3
