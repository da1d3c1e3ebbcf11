"""Faults a resilient client meets in production, on both stacks: a server that hangs, one that
answers slowly, a refused connection.

For each: the caller gets the right typed error within its deadline, the circuit breaker opens
and closes exactly as configured (its clock is a fake one, so "after the reset timeout" costs no
waiting), and no thread or asyncio task outlives the channel. The service-level faults (the arm
and the task server killed and restarted) are in ``test_restarts.py``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc.client import BreakerSettings, CircuitState, RetryPolicy, resilient_channel
from octollm_grpc.client import aio as client_aio
from octollm_grpc.client._breaker import ChannelBreakers
from octollm_grpc.testing import FakeClock
from tests.reliability.support import Settle, closed_port, sync_server, warm_up_aio
from tests.servers import aio_server

METHOD = "/test.Faults/Call"
DEADLINE = 0.3
#: Slack on top of a deadline for a loaded 2-core CI machine.
SLACK = 0.7
RESET = 5.0  # breaker reset timeout, on the fake clock
#: The hang is cut by the policy's own per-attempt timeout: that counts against the server
#: (the caller's own deadline running out would not: tests/client/test_caller_deadline_verdicts.py).
PER_ATTEMPT = RetryPolicy(max_attempts=1, per_attempt_timeout=DEADLINE)


class Misbehaving:
    """A server whose one method hangs, sleeps, or answers, as the test sets ``mode``."""

    def __init__(self) -> None:
        self.mode = "hang"
        self.delay = 0.15
        self.calls = 0
        self.release = threading.Event()

    def call(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        if self.mode == "hang":
            self.release.wait(10)  # bounded; released at teardown
        elif self.mode == "slow":
            time.sleep(self.delay)
        return b"ok"

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "test.Faults", {"Call": grpc.unary_unary_rpc_method_handler(self.call)})


@pytest.fixture
def misbehaving() -> Iterator[tuple[Misbehaving, str]]:
    server = Misbehaving()
    with sync_server([server.handler()]) as target:
        try:
            yield server, target
        finally:
            server.release.set()


def _breakers(target: str, clock: FakeClock, threshold: int,
              changes: list[tuple[CircuitState, CircuitState]]) -> ChannelBreakers:
    def record(_: Any, old: CircuitState, new: CircuitState) -> None:
        changes.append((old, new))
    return ChannelBreakers(target, BreakerSettings(failure_threshold=threshold,
                                                   reset_timeout=RESET),
                           clock=clock.now, registry=CollectorRegistry(), listeners=[record])


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    try:
        outcome = call()
    except grpc.RpcError as error:
        outcome = error
    return outcome, time.monotonic() - start


def _warm_up(target: str) -> None:
    # grpcio starts process-wide threads on first use: they belong in the baseline.
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=5)


OPENED = [(CircuitState.CLOSED, CircuitState.OPEN)]
CYCLE = [*OPENED, (CircuitState.OPEN, CircuitState.HALF_OPEN),
         (CircuitState.HALF_OPEN, CircuitState.CLOSED)]


def test_sync_hanging_server_hits_deadline_opens_and_closes_breaker(
        misbehaving: tuple[Misbehaving, str]) -> None:
    """Hang: TimeoutError at the attempt timeout, twice -> open -> fail fast; back -> closed."""
    server, target = misbehaving
    _warm_up(target)
    settle = Settle()
    clock, changes = FakeClock(), []
    breakers = _breakers(target, clock, 2, changes)
    with resilient_channel(target, retry=PER_ATTEMPT, breaker=breakers, budget=None,
                           registry=CollectorRegistry()) as channel:
        call = channel.unary_unary(METHOD)
        hung = [_timed(lambda: call(b"x", timeout=5)) for _ in range(2)]
        rejected, rejected_in = _timed(lambda: call(b"x", timeout=DEADLINE))
        calls_while_open = server.calls
        server.mode = "answer"
        clock.advance(RESET)
        answered, _ = _timed(lambda: call(b"x", timeout=5))
        state = breakers.for_method(METHOD).state
    for error, took in hung:
        assert isinstance(error, errors.TimeoutError), error
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert DEADLINE * 0.9 <= took <= DEADLINE + SLACK
    assert isinstance(rejected, errors.CircuitOpenError)
    assert rejected.retry_after == pytest.approx(RESET)
    assert rejected_in < 0.1
    assert calls_while_open == 2  # the rejected call never reached the server
    assert answered == b"ok"
    assert changes == CYCLE and state is CircuitState.CLOSED
    server.release.set()
    assert settle.leaked_threads() == []


async def test_aio_hanging_server_hits_deadline_opens_and_closes_breaker() -> None:
    """The aio stack: same deadline, same breaker cycle, no task or thread left behind."""
    server = Misbehaving()
    async with aio_server([_aio_handler(server)]) as target:
        _warm_up(target)
        settle = Settle()
        clock, changes = FakeClock(), []
        breakers = _breakers(target, clock, 2, changes)
        async with client_aio.resilient_channel(target, retry=PER_ATTEMPT, breaker=breakers,
                                                budget=None,
                                                registry=CollectorRegistry()) as channel:
            call = channel.unary_unary(METHOD)
            hung = []
            for _ in range(2):
                start = time.monotonic()
                with pytest.raises(errors.TimeoutError) as raised:
                    await call(b"x", timeout=5)
                hung.append((raised.value, time.monotonic() - start))
            start = time.monotonic()
            with pytest.raises(errors.CircuitOpenError):
                await call(b"x", timeout=DEADLINE)
            rejected_in = time.monotonic() - start
            calls_while_open = server.calls
            server.mode = "answer"
            clock.advance(RESET)
            answered = await call(b"x", timeout=5)
        server.release.set()
        leaked_tasks = await settle.leaked_tasks()
    for error, took in hung:
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert DEADLINE * 0.9 <= took <= DEADLINE + SLACK
    assert rejected_in < 0.1
    assert calls_while_open == 2
    assert answered == b"ok"
    assert changes == CYCLE
    assert leaked_tasks == 0
    assert settle.leaked_threads() == []


def _aio_handler(server: Misbehaving) -> grpc.GenericRpcHandler:
    import asyncio

    async def call(request: bytes, context: Any) -> bytes:
        server.calls += 1
        if server.mode == "hang":
            for _ in range(200):  # bounded: 10 s at most
                if server.release.is_set():
                    break
                await asyncio.sleep(0.05)
        elif server.mode == "slow":
            await asyncio.sleep(server.delay)
        return b"ok"

    return grpc.method_handlers_generic_handler(
        "test.Faults", {"Call": grpc.unary_unary_rpc_method_handler(call)})


def test_sync_slow_server_succeeds_within_deadline_and_times_out_below_it(
        misbehaving: tuple[Misbehaving, str]) -> None:
    """Slow answers: fine with time to spare, TimeoutError at a shorter deadline, no retry storm."""
    server, target = misbehaving
    server.mode = "slow"
    _warm_up(target)
    settle = Settle()
    clock, changes = FakeClock(), []
    with resilient_channel(target, breaker=_breakers(target, clock, 3, changes), budget=None,
                           registry=CollectorRegistry()) as channel:
        call = channel.unary_unary(METHOD)
        fine = [_timed(lambda: call(b"x", timeout=5)) for _ in range(3)]
        short, took = _timed(lambda: call(b"x", timeout=0.05))
    assert [answer for answer, _ in fine] == [b"ok"] * 3
    assert all(t >= server.delay for _, t in fine)
    assert isinstance(short, errors.TimeoutError)
    assert took <= 0.05 + SLACK
    assert server.calls == 4  # the deadline was spent: no retry
    assert changes == []  # slow successes are not failures
    assert settle.leaked_threads() == []


@pytest.mark.parametrize("stack", ["sync", "aio"])
def test_connection_refused_is_network_error_then_circuit_open(stack: str) -> None:
    """Nothing listening: NetworkError after the retries, fast; the breaker opens, then closes."""
    target = f"127.0.0.1:{closed_port()}"
    clock, changes = FakeClock(), []
    breakers = _breakers(target, clock, 3, changes)
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    warm_up_aio()
    settle = Settle()
    if stack == "sync":
        outcomes = _refused_sync(target, policy, breakers, clock)
    else:
        import asyncio
        outcomes = asyncio.run(_refused_aio(target, policy, breakers, clock))
    (refused, refused_code, refused_in), (rejected, _, rejected_in), (after_reset, code, _) = (
        outcomes)
    assert refused is errors.NetworkError
    assert refused_code is grpc.StatusCode.UNAVAILABLE
    assert refused_in < 2.0  # three refused attempts: no deadline needed to end them
    assert rejected is errors.CircuitOpenError
    assert rejected_in < 0.1
    # After the reset timeout one probe goes out; refused again, so the breaker reopens (and
    # the retry of that call meets the open breaker: either error is the truth).
    assert after_reset in (errors.NetworkError, errors.CircuitOpenError)
    assert code is grpc.StatusCode.UNAVAILABLE
    assert changes == [*OPENED, (CircuitState.OPEN, CircuitState.HALF_OPEN),
                       (CircuitState.HALF_OPEN, CircuitState.OPEN)]
    assert settle.leaked_threads() == []


Outcome = tuple[type, grpc.StatusCode | None, float]


def _summary(error: grpc.RpcError, took: float) -> Outcome:
    # Only the facts: a kept exception's traceback would keep the channel (and its threads).
    return type(error), error.code(), took  # type: ignore[attr-defined]


def _refused_sync(target: str, policy: RetryPolicy, breakers: ChannelBreakers,
                  clock: FakeClock) -> list[Outcome]:
    outcomes: list[Outcome] = []
    with resilient_channel(target, retry=policy, breaker=breakers, budget=None,
                           rng=random.Random(7), registry=CollectorRegistry()) as channel:
        call = channel.unary_unary(METHOD)
        for advance in (0.0, 0.0, RESET):
            clock.advance(advance)
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as raised:
                call(b"x", timeout=5)
            outcomes.append(_summary(raised.value, time.monotonic() - start))
    return outcomes


async def _refused_aio(target: str, policy: RetryPolicy, breakers: ChannelBreakers,
                       clock: FakeClock) -> list[Outcome]:
    settle = Settle()
    outcomes: list[Outcome] = []
    async with client_aio.resilient_channel(target, retry=policy, breaker=breakers,
                                            budget=None, rng=random.Random(7),
                                            registry=CollectorRegistry()) as channel:
        call = channel.unary_unary(METHOD)
        for advance in (0.0, 0.0, RESET):
            clock.advance(advance)
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as raised:
                await call(b"x", timeout=5)
            outcomes.append(_summary(raised.value, time.monotonic() - start))
            del raised
    assert await settle.leaked_tasks() == 0
    return outcomes
