"""Hedged calls on real servers, sync and aio: winners, cancelled losers, stops, budget, breaker.

The server serves each attempt by its ``grpc-previous-rpc-attempts`` header, so which
attempt is slow is fixed by the test (held on an event), not by arrival order. The hedging
delay is waited on the fake clock's sleep (it returns at once and records the wait), except
where a test shows that a hedge did *not* wait for the delay.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.client import BreakerSettings, RetryBudget, resilient_channel
from octollm_grpc.client import aio as client_aio
from octollm_grpc.status._limits import PUSHBACK_KEY
from octollm_grpc.testing import FakeClock
from tests.client.channels import aio_channel, sync_channel
from tests.client.hedge_backend import STREAM, UNARY, AioHedgeBackend, HedgeBackend, Serve
from tests.servers import aio_server, sync_server

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
INVALID = grpc.StatusCode.INVALID_ARGUMENT
_WAIT_S = 5.0  # bounded waits for the server to see a cancellation


def hedging(max_attempts: int = 2, delay: str = "0.05s",
            non_fatal: tuple[str, ...] = ("UNAVAILABLE",), **top: Any) -> dict[str, Any]:
    """A config hedging every method of test.Hedge."""
    return {"methodConfig": [{"name": [{"service": "test.Hedge"}], "hedgingPolicy": {
        "maxAttempts": max_attempts, "hedgingDelay": delay,
        "nonFatalStatusCodes": list(non_fatal)}}], **top}


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"grpc_type": "unary", "grpc_service": "test.Hedge",
                                             "grpc_method": "Unary", **labels})
    return value or 0.0


def real_sync_channel(target: str, **kwargs: Any) -> grpc.Channel:
    """A sync resilient channel on the real clock and sleep (no budget or breaker)."""
    kwargs.setdefault("budget", None)
    kwargs.setdefault("breaker", None)
    kwargs.setdefault("registry", CollectorRegistry())
    return resilient_channel(target, **kwargs)


def real_aio_channel(target: str, **kwargs: Any) -> grpc.aio.Channel:
    """The aio form of :func:`real_sync_channel`."""
    kwargs.setdefault("budget", None)
    kwargs.setdefault("breaker", None)
    kwargs.setdefault("registry", CollectorRegistry())
    return client_aio.resilient_channel(target, **kwargs)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event holding slow attempts; set at the end so no handler outlives its test."""
    event = threading.Event()
    yield event
    event.set()


# -- the winner and the losers --------------------------------------------------------------


def test_sync_hedge_wins_and_the_slow_attempt_is_cancelled_on_the_server(
        clock: FakeClock, registry: CollectorRegistry, release: threading.Event) -> None:
    """Sync: the hedge sent after the delay answers; the held first attempt is cancelled."""
    backend = HedgeBackend({0: Serve(release=release)})
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, sleep=backend.sleep_for(clock),
                               config=hedging(), registry=registry)
        assert channel.unary_unary(UNARY)(b"x") == b"attempt-1"
        assert backend.attempt(0).cancelled.wait(_WAIT_S)
    assert backend.numbers() == [0, 1]
    assert [s.header for s in backend.seen] == [None, "1"]
    assert clock.sleeps == [0.05]
    assert _value(registry, "octollm_client_hedges_total") == 1
    assert _value(registry, "octollm_client_attempts_total", grpc_code="OK") == 1
    assert _value(registry, "octollm_client_attempts_total", grpc_code="Canceled") == 1
    assert _value(registry, "grpc_client_handled_total", grpc_code="OK") == 1


async def test_aio_hedge_wins_and_the_slow_attempt_is_cancelled_on_the_server(
        clock: FakeClock, registry: CollectorRegistry, release: threading.Event) -> None:
    """Aio: the hedge sent after the delay answers; the held first attempt is cancelled."""
    backend = HedgeBackend({0: Serve(release=release)})
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, sleep=backend.async_sleep_for(clock),
                               config=hedging(), registry=registry) as channel:
            assert await channel.unary_unary(UNARY)(b"x") == b"attempt-1"
            assert await asyncio.to_thread(backend.attempt(0).cancelled.wait, _WAIT_S)
    assert backend.numbers() == [0, 1]
    assert [s.header for s in backend.seen] == [None, "1"]
    assert clock.sleeps == [0.05]
    assert _value(registry, "octollm_client_hedges_total") == 1
    assert _value(registry, "octollm_client_attempts_total", grpc_code="Canceled") == 1
    assert _value(registry, "grpc_client_handled_total", grpc_code="OK") == 1


async def test_aio_server_handler_of_the_loser_sees_cancelled_error(
        clock: FakeClock, release: threading.Event) -> None:
    """Aio client and aio server: the losing attempt's coroutine gets CancelledError."""
    backend = AioHedgeBackend({0: Serve(release=release)})
    async with aio_server([backend.handler()]) as target, aio_channel(
            target, clock, sleep=backend.async_sleep_for(clock), config=hedging()) as channel:
        assert await channel.unary_unary(UNARY)(b"x") == b"attempt-1"
        assert await asyncio.to_thread(backend.attempt(0).cancelled.wait, _WAIT_S)


def test_sync_every_attempt_carries_its_number_up_to_max_attempts(
        clock: FakeClock, release: threading.Event) -> None:
    """Sync: with three attempts held, three go out numbered 0, 1, 2; the last one wins."""
    backend = HedgeBackend({0: Serve(release=release), 1: Serve(release=release)})
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, sleep=backend.sleep_for(clock),
                               config=hedging(max_attempts=3))
        assert channel.unary_unary(UNARY)(b"x") == b"attempt-2"
        assert backend.attempt(0).cancelled.wait(_WAIT_S)
        assert backend.attempt(1).cancelled.wait(_WAIT_S)
    assert sorted(s.header or "0" for s in backend.seen) == ["0", "1", "2"]
    assert clock.sleeps == [0.05, 0.05]


def test_sync_a_fast_first_attempt_sends_no_hedge(registry: CollectorRegistry) -> None:
    """Sync: an answer within the hedging delay (real clock) leaves the call at one attempt."""
    backend = HedgeBackend({})
    with sync_server([backend.handler()]) as target:
        channel = real_sync_channel(target, config=hedging(delay="30s"),
                               registry=registry)
        assert channel.unary_unary(UNARY)(b"x") == b"attempt-0"
        assert channel.unary_unary(UNARY).future(b"x").result() == b"attempt-0"
    assert backend.numbers() == [0, 0]
    assert _value(registry, "octollm_client_hedges_total") == 0


async def test_aio_a_fast_first_attempt_sends_no_hedge(registry: CollectorRegistry) -> None:
    """Aio: an answer within the hedging delay (real clock) leaves the call at one attempt."""
    backend = HedgeBackend({})
    with sync_server([backend.handler()]) as target:
        async with real_aio_channel(target, config=hedging(delay="30s"),
                               registry=registry) as channel:
            assert await channel.unary_unary(UNARY)(b"x") == b"attempt-0"
    assert backend.numbers() == [0]
    assert _value(registry, "octollm_client_hedges_total") == 0


# -- non-fatal and fatal codes, pushback ----------------------------------------------------


def test_sync_non_fatal_status_sends_the_next_hedge_at_once() -> None:
    """Sync: UNAVAILABLE (non-fatal) sends the hedge without waiting its 30 s delay."""
    backend = HedgeBackend({0: Serve(UNAVAILABLE)})
    with sync_server([backend.handler()]) as target:
        channel = real_sync_channel(target, config=hedging(delay="30s"))
        started = time.monotonic()
        assert channel.unary_unary(UNARY)(b"x") == b"attempt-1"
    assert time.monotonic() - started < 10
    assert backend.numbers() == [0, 1]


async def test_aio_non_fatal_status_sends_the_next_hedge_at_once() -> None:
    """Aio: UNAVAILABLE (non-fatal) sends the hedge without waiting its 30 s delay."""
    backend = HedgeBackend({0: Serve(UNAVAILABLE)})
    with sync_server([backend.handler()]) as target:
        async with real_aio_channel(target, config=hedging(delay="30s")) as channel:
            assert await asyncio.wait_for(channel.unary_unary(UNARY)(b"x"), 10) == b"attempt-1"
    assert backend.numbers() == [0, 1]


def test_sync_fatal_status_ends_the_call_and_cancels_the_others(
        clock: FakeClock, release: threading.Event) -> None:
    """Sync: the hedge's INVALID_ARGUMENT (fatal) is the call's error; attempt 0 is cancelled."""
    backend = HedgeBackend({0: Serve(release=release), 1: Serve(INVALID)})
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, sleep=backend.sleep_for(clock),
                               config=hedging())
        with pytest.raises(errors.OctoLLMError) as raised:
            channel.unary_unary(UNARY)(b"x")
        assert backend.attempt(0).cancelled.wait(_WAIT_S)
    assert raised.value.code() is INVALID
    assert backend.numbers() == [0, 1]


async def test_aio_fatal_status_ends_the_call_and_cancels_the_others(
        clock: FakeClock, release: threading.Event) -> None:
    """Aio: the hedge's INVALID_ARGUMENT (fatal) is the call's error; attempt 0 is cancelled."""
    backend = HedgeBackend({0: Serve(release=release), 1: Serve(INVALID)})
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, sleep=backend.async_sleep_for(clock),
                               config=hedging()) as channel:
            call = channel.unary_unary(UNARY)(b"x")
            with pytest.raises(errors.OctoLLMError) as raised:
                await call
            assert await call.code() is INVALID
            assert await asyncio.to_thread(backend.attempt(0).cancelled.wait, _WAIT_S)
    assert raised.value.code() is INVALID
    assert backend.numbers() == [0, 1]


def test_sync_all_attempts_non_fatal_fail_with_the_last_status(clock: FakeClock) -> None:
    """Sync: when every attempt fails non-fatally, the call fails after max_attempts."""
    backend = HedgeBackend({}, default=Serve(UNAVAILABLE))
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, sleep=backend.sleep_for(clock),
                               config=hedging(max_attempts=3))
        with pytest.raises(errors.NetworkError):
            channel.unary_unary(UNARY)(b"x")
    assert sorted(backend.numbers()) == [0, 1, 2]


PUSHBACK = Serve(UNAVAILABLE, trailers=((PUSHBACK_KEY, "10"),))


def test_sync_pushback_stops_further_hedges(clock: FakeClock) -> None:
    """Sync: a non-fatal failure with pushback sends no more hedges; the call fails with it."""
    backend = HedgeBackend({0: PUSHBACK}, default=Serve())
    with sync_server([backend.handler()]) as target, capture_logs() as logs:
        channel = real_sync_channel(target, config=hedging(max_attempts=3, delay="30s"))
        with pytest.raises(errors.NetworkError):
            channel.unary_unary(UNARY)(b"x")
    assert backend.numbers() == [0]
    assert [e["event"] for e in logs if e["event"].startswith("rpc_hedge")] == [
        "rpc_hedge_stopped_by_server"]


async def test_aio_pushback_stops_further_hedges(clock: FakeClock) -> None:
    """Aio: a non-fatal failure with pushback sends no more hedges; the call fails with it."""
    backend = HedgeBackend({0: PUSHBACK}, default=Serve())
    with sync_server([backend.handler()]) as target:
        async with real_aio_channel(target, config=hedging(max_attempts=3, delay="30s")) as channel:
            with pytest.raises(errors.NetworkError):
                await asyncio.wait_for(channel.unary_unary(UNARY)(b"x"), 10)
    assert backend.numbers() == [0]


def test_sync_pushback_from_a_loser_stops_hedges_while_the_first_runs(
        release: threading.Event) -> None:
    """Sync: attempt 1's pushback stops attempt 2 (due 0.2 s later); attempt 0 still wins."""
    backend = HedgeBackend({0: Serve(release=release), 1: PUSHBACK})
    with sync_server([backend.handler()]) as target:
        channel = real_sync_channel(target, config=hedging(max_attempts=3, delay="0.2s"))
        future = channel.unary_unary(UNARY).future(b"x")
        assert backend.wait_arrivals(2)
        time.sleep(0.5)  # past the third attempt's due time (real clock, bounded)
        release.set()
        assert future.result(_WAIT_S) == b"attempt-0"
    assert backend.numbers() == [0, 1]


# -- the retry budget and the breaker -------------------------------------------------------


def test_sync_the_budget_caps_hedges(registry: CollectorRegistry) -> None:
    """Sync: hedges and non-fatal failures spend tokens; at half the bucket hedges stop."""
    budget = RetryBudget(max_tokens=4, token_ratio=0.1)
    backend = HedgeBackend({}, default=Serve(UNAVAILABLE))
    with sync_server([backend.handler()]) as target:
        # The delay never passes: only the failures send hedges (an order the test fixes).
        channel = real_sync_channel(target, config=hedging(max_attempts=5, delay="30s"),
                                    budget=budget, registry=registry)
        for _ in range(3):
            with pytest.raises(errors.NetworkError):
                channel.unary_unary(UNARY)(b"x")
    # 4 tokens, hedges while > 2; a hedge and a non-fatal failure take one each: the first
    # call gets one hedge, then every call is throttled at once.
    assert len(backend.seen) == 2 + 1 + 1
    assert budget.tokens == 0
    assert _value(registry, "octollm_client_hedges_total") == 1
    assert _value(registry, "octollm_client_throttled_total") == 3


async def test_aio_the_budget_caps_hedges(registry: CollectorRegistry) -> None:
    """Aio: hedges and non-fatal failures spend tokens; at half the bucket hedges stop."""
    budget = RetryBudget(max_tokens=4, token_ratio=0.1)
    backend = HedgeBackend({}, default=Serve(UNAVAILABLE))
    with sync_server([backend.handler()]) as target:
        async with real_aio_channel(target, config=hedging(max_attempts=5, delay="30s"),
                                    budget=budget, registry=registry) as channel:
            for _ in range(3):
                with pytest.raises(errors.NetworkError):
                    await channel.unary_unary(UNARY)(b"x")
    assert len(backend.seen) == 2 + 1 + 1
    assert budget.tokens == 0
    assert _value(registry, "octollm_client_throttled_total") == 3


def _breaker() -> BreakerSettings:
    return BreakerSettings(failure_threshold=2, reset_timeout=60)


def test_sync_the_breaker_counts_a_hedged_call_once(clock: FakeClock) -> None:
    """Sync: a call whose three attempts fail is one failure: the breaker (threshold 2) holds."""
    backend = HedgeBackend({}, default=Serve(UNAVAILABLE))
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, sleep=backend.sleep_for(clock),
                               config=hedging(max_attempts=3),
                               breaker=_breaker())
        with pytest.raises(errors.NetworkError):
            channel.unary_unary(UNARY)(b"x")
        with pytest.raises(errors.NetworkError):
            channel.unary_unary(UNARY)(b"x")
        with pytest.raises(errors.CircuitOpenError):
            channel.unary_unary(UNARY)(b"x")
    assert len(backend.seen) == 6  # 3 + 3; the third call never left the process


async def test_aio_the_breaker_counts_a_hedged_call_once(clock: FakeClock) -> None:
    """Aio: a call whose three attempts fail is one failure: the breaker (threshold 2) holds."""
    backend = HedgeBackend({}, default=Serve(UNAVAILABLE))
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, sleep=backend.async_sleep_for(clock),
                               config=hedging(max_attempts=3),
                               breaker=_breaker()) as channel:
            for _ in range(2):
                with pytest.raises(errors.NetworkError):
                    await channel.unary_unary(UNARY)(b"x")
            with pytest.raises(errors.CircuitOpenError):
                await channel.unary_unary(UNARY)(b"x")
    assert len(backend.seen) == 6


# -- deadlines and cancellation -------------------------------------------------------------


def test_sync_every_hedge_runs_within_the_callers_deadline(
        clock: FakeClock, release: threading.Event) -> None:
    """Sync: the hedge's timeout is what is left of the caller's (the 1 s delay taken off)."""
    backend = HedgeBackend({0: Serve(release=release)})
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, sleep=backend.sleep_for(clock),
                               config=hedging(delay="1s"))
        assert channel.unary_unary(UNARY)(b"x", timeout=5) == b"attempt-1"
    first, hedge = backend.attempt(0).time_remaining, backend.attempt(1).time_remaining
    assert first is not None and 4.0 < first <= 5.05  # grpc-timeout rounds up
    assert hedge is not None and 3.0 < hedge <= 4.05


async def test_aio_every_hedge_runs_within_the_callers_deadline(
        clock: FakeClock, release: threading.Event) -> None:
    """Aio: the hedge's timeout is what is left of the caller's (the 1 s delay taken off)."""
    backend = HedgeBackend({0: Serve(release=release)})
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, sleep=backend.async_sleep_for(clock),
                               config=hedging(delay="1s")) as channel:
            assert await channel.unary_unary(UNARY)(b"x", timeout=5) == b"attempt-1"
    first, hedge = backend.attempt(0).time_remaining, backend.attempt(1).time_remaining
    assert first is not None and 4.0 < first <= 5.05  # grpc-timeout rounds up
    assert hedge is not None and 3.0 < hedge <= 4.05


def test_sync_cancelling_a_hedged_future_cancels_every_attempt(
        release: threading.Event) -> None:
    """Sync: future.cancel() cancels both attempts in flight; the server sees both cancelled."""
    backend = HedgeBackend({}, default=Serve(release=release))
    with sync_server([backend.handler()]) as target:
        channel = real_sync_channel(target, config=hedging(delay="0s"))
        future = channel.unary_unary(UNARY).future(b"x")
        deadline = time.monotonic() + _WAIT_S
        while len(backend.seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert future.cancel()
        assert future.cancelled()
        assert backend.attempt(0).cancelled.wait(_WAIT_S)
        assert backend.attempt(1).cancelled.wait(_WAIT_S)


async def test_aio_cancelling_a_hedged_call_cancels_every_attempt(
        release: threading.Event) -> None:
    """Aio: cancelling the caller's task cancels both attempts; the server sees both."""
    backend = HedgeBackend({}, default=Serve(release=release))
    with sync_server([backend.handler()]) as target:
        async with real_aio_channel(target, config=hedging(delay="0s")) as channel:
            task = asyncio.ensure_future(channel.unary_unary(UNARY)(b"x"))
            deadline = time.monotonic() + _WAIT_S
            while len(backend.seen) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(backend.attempt(0).cancelled.wait, _WAIT_S)
            assert await asyncio.to_thread(backend.attempt(1).cancelled.wait, _WAIT_S)


# -- response streams -----------------------------------------------------------------------


def test_sync_stream_hedge_wins_before_the_first_message(
        clock: FakeClock, release: threading.Event) -> None:
    """Sync stream: the hedge's messages reach the caller; the held first attempt is cancelled."""
    backend = HedgeBackend({0: Serve(release=release)})
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, sleep=backend.sleep_for(clock),
                               config=hedging())
        assert list(channel.unary_stream(STREAM)(b"x")) == [b"attempt-1:m0", b"attempt-1:m1"]
        assert backend.attempt(0).cancelled.wait(_WAIT_S)
    assert backend.numbers() == [0, 1]


async def test_aio_stream_hedge_wins_before_the_first_message(
        clock: FakeClock, release: threading.Event) -> None:
    """Aio stream: the hedge's messages reach the caller; the held first attempt is cancelled."""
    backend = HedgeBackend({0: Serve(release=release)})
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, sleep=backend.async_sleep_for(clock),
                               config=hedging()) as channel:
            got = [m async for m in channel.unary_stream(STREAM)(b"x")]
            assert got == [b"attempt-1:m0", b"attempt-1:m1"]
            assert await asyncio.to_thread(backend.attempt(0).cancelled.wait, _WAIT_S)
    assert backend.numbers() == [0, 1]


def test_sync_stream_is_not_hedged_after_its_first_message(clock: FakeClock) -> None:
    """Sync stream: a failure after the first message is raised typed, with no hedge."""
    backend = HedgeBackend({0: Serve(UNAVAILABLE, messages=1)})
    with sync_server([backend.handler()]) as target:
        channel = real_sync_channel(target, config=hedging(delay="30s"))
        stream = channel.unary_stream(STREAM)(b"x")
        assert next(stream) == b"attempt-0:m0"
        with pytest.raises(errors.NetworkError):
            next(stream)
    assert backend.numbers() == [0]


async def test_aio_stream_is_not_hedged_after_its_first_message(clock: FakeClock) -> None:
    """Aio stream: a failure after the first message is raised typed, with no hedge."""
    backend = HedgeBackend({0: Serve(UNAVAILABLE, messages=1)})
    with sync_server([backend.handler()]) as target:
        async with real_aio_channel(target, config=hedging(delay="30s")) as channel:
            stream = channel.unary_stream(STREAM)(b"x")
            assert await stream.read() == b"attempt-0:m0"
            with pytest.raises(errors.NetworkError):
                await stream.read()
    assert backend.numbers() == [0]


def test_sync_stream_non_fatal_failure_before_the_first_message_hedges(
        clock: FakeClock) -> None:
    """Sync stream: UNAVAILABLE before any message sends the hedge, whose messages arrive."""
    backend = HedgeBackend({0: Serve(UNAVAILABLE, messages=0)})
    with sync_server([backend.handler()]) as target:
        channel = real_sync_channel(target, config=hedging(delay="30s"))
        assert list(channel.unary_stream(STREAM)(b"x")) == [b"attempt-1:m0", b"attempt-1:m1"]
    assert backend.numbers() == [0, 1]


# -- a total outage: hedging amplifies no more than retries -----------------------------------


def _retried(max_attempts: int) -> dict[str, Any]:
    return {"methodConfig": [{"name": [{"service": "test.Hedge"}], "retryPolicy": {
        "maxAttempts": max_attempts, "initialBackoff": "0.001s", "maxBackoff": "0.001s",
        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}


def test_sync_outage_hedging_sends_no_more_attempts_than_retries() -> None:
    """Sync, every attempt UNAVAILABLE, the same budget: 20 hedged calls reach the server no
    more often than 20 retried ones (22 against 23 attempts), far below 3 per call."""
    seen = {}
    for name, config in (("retried", _retried(3)),
                         ("hedged", hedging(max_attempts=3, delay="30s"))):
        backend = HedgeBackend({}, default=Serve(UNAVAILABLE))
        with sync_server([backend.handler()]) as target:
            channel = real_sync_channel(target, config=config,
                                        budget=RetryBudget(max_tokens=10, token_ratio=0.1))
            for _ in range(20):
                with pytest.raises(errors.NetworkError):
                    channel.unary_unary(UNARY)(b"x")
        seen[name] = len(backend.seen)
    assert seen == {"retried": 23, "hedged": 22}


async def test_aio_outage_hedging_sends_no_more_attempts_than_retries() -> None:
    """Aio, every attempt UNAVAILABLE, the same budget: hedged calls reach the server no more
    often than retried ones."""
    seen = {}
    for name, config in (("retried", _retried(3)),
                         ("hedged", hedging(max_attempts=3, delay="30s"))):
        backend = HedgeBackend({}, default=Serve(UNAVAILABLE))
        with sync_server([backend.handler()]) as target:
            async with real_aio_channel(target, config=config, budget=RetryBudget(
                    max_tokens=10, token_ratio=0.1)) as channel:
                for _ in range(20):
                    with pytest.raises(errors.NetworkError):
                        await channel.unary_unary(UNARY)(b"x")
        seen[name] = len(backend.seen)
    assert seen == {"retried": 23, "hedged": 22}


# -- the deadline of a served call reaches every hedge ---------------------------------------


def test_sync_hedges_inherit_the_deadline_of_the_call_being_served(
        clock: FakeClock, release: threading.Event) -> None:
    """Sync, two hops: a handler's hedged call without a timeout gives both attempts what is
    left of the incoming 3 s deadline (the hedge 1 s less: its delay on the fake clock)."""
    from octollm_grpc.server import server_interceptors

    backend = HedgeBackend({0: Serve(release=release)})
    with sync_server([backend.handler()]) as down_target:
        down = sync_channel(down_target, clock, sleep=backend.sleep_for(clock),
                            config=hedging(delay="1s"))
        call = down.unary_unary(UNARY)

        def handle(request: bytes, context: Any) -> bytes:
            answer: bytes = call(request)  # no timeout given: the served call's applies
            return answer

        middle = grpc.method_handlers_generic_handler("test.Middle", {
            "Call": grpc.unary_unary_rpc_method_handler(handle)})
        with sync_server([middle], interceptors=server_interceptors(
                logger=False, metrics=False)) as middle_target, grpc.insecure_channel(
                middle_target) as plain:
            assert plain.unary_unary("/test.Middle/Call")(b"x", timeout=3) == b"attempt-1"
    first, hedge = backend.attempt(0).time_remaining, backend.attempt(1).time_remaining
    assert first is not None and 2.0 < first <= 3.05
    assert hedge is not None and 1.0 < hedge <= 2.05


def test_sync_stub_style_with_call_is_hedged_and_answers_for_the_winner(
        clock: FakeClock, release: threading.Event) -> None:
    """Sync: a multi-callable made as generated stubs make it (serializers, registered
    method) hedges blocking ``with_call``; the returned call answers for the winner."""
    backend = HedgeBackend({0: Serve(release=release)})
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, sleep=backend.sleep_for(clock), config=hedging())
        method = channel.unary_unary(UNARY, request_serializer=bytes,
                                     response_deserializer=bytes, _registered_method=True)
        response, call = method.with_call(b"x", timeout=5)
        assert backend.attempt(0).cancelled.wait(_WAIT_S)
    assert response == b"attempt-1"
    assert call.code() is grpc.StatusCode.OK
    assert call.trailing_metadata() is not None
