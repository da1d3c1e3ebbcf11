"""The circuit breaker on real channels, sync and aio: probes, cancellation, failing fast."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent import futures

import grpc
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.client import BreakerSettings, ChannelBreaker, CircuitState, RetryPolicy
from octollm_grpc.client._breaker import ChannelBreakers
from octollm_grpc.testing import FakeClock
from tests.client.backend import FAIL, OTHER, SERVER_STREAM, SUCCEED, UNARY, Backend, Reply
from tests.client.channels import aio_channel, sync_channel
from tests.servers import sync_server

CALLERS = 200
PROBES = 3


def _half_open(target: str, clock: FakeClock, registry: CollectorRegistry,
               probes: int) -> ChannelBreakers:
    """Breakers for ``target`` whose breaker is open and due for half-open."""
    breakers = ChannelBreakers(
        target, BreakerSettings(failure_threshold=1, reset_timeout=10, half_open_probes=probes),
        clock=clock.now, registry=registry)
    breaker = breakers.for_method(UNARY)
    breaker.on_failure(breaker.acquire())
    assert breaker.state is CircuitState.OPEN
    clock.advance(10)
    return breakers


def _wait_until(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


async def _async_wait_until(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_sync_half_open_lets_exactly_n_of_200_threads_through(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """Sync: 200 threads against a half-open breaker with 3 probes: exactly 3 reach the server."""
    release = threading.Event()
    backend = Backend([Reply(wait=release)], clock)
    with sync_server([backend.handler()]) as target:
        breakers = _half_open(target, clock, registry, PROBES)
        channel = sync_channel(target, clock, breaker=breakers)
        call = channel.unary_unary(UNARY)
        with futures.ThreadPoolExecutor(CALLERS) as pool:
            start = threading.Barrier(CALLERS)

            def one() -> bytes:
                start.wait(10)
                return call(b"x", timeout=30)

            results = [pool.submit(one) for _ in range(CALLERS)]
            try:
                _wait_until(lambda: sum(f.done() for f in results) >= CALLERS - PROBES)
            finally:
                release.set()
            outcomes = [f.exception(10) or f.result() for f in results]
    rejected = [o for o in outcomes if isinstance(o, errors.CircuitOpenError)]
    assert len(rejected) == CALLERS - PROBES
    assert outcomes.count(b"ok") == PROBES
    assert backend.count() == PROBES
    assert breakers.for_method(UNARY).state is CircuitState.CLOSED


async def test_aio_half_open_lets_exactly_n_of_200_tasks_through(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """Aio: 200 tasks against a half-open breaker with 3 probes: exactly 3 reach the server."""
    release = threading.Event()
    backend = Backend([Reply(wait=release)], clock)
    with sync_server([backend.handler()]) as target:
        breakers = _half_open(target, clock, registry, PROBES)
        async with aio_channel(target, clock, breaker=breakers) as channel:
            call = channel.unary_unary(UNARY)

            async def one() -> bytes:
                return await call(b"x", timeout=30)

            tasks = [asyncio.ensure_future(one()) for _ in range(CALLERS)]
            try:
                await _async_wait_until(
                    lambda: sum(t.done() for t in tasks) >= CALLERS - PROBES)
            finally:
                release.set()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    rejected = [o for o in outcomes if isinstance(o, errors.CircuitOpenError)]
    assert len(rejected) == CALLERS - PROBES
    assert outcomes.count(b"ok") == PROBES
    assert backend.count() == PROBES
    assert breakers.for_method(UNARY).state is CircuitState.CLOSED


def test_sync_cancelled_probe_frees_its_permit(clock: FakeClock,
                                               registry: CollectorRegistry) -> None:
    """Sync: cancelling the only in-flight probe lets the next call probe at once."""
    release = threading.Event()
    backend = Backend([Reply(wait=release), SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        breakers = _half_open(target, clock, registry, probes=1)
        channel = sync_channel(target, clock, breaker=breakers)
        try:
            stream = channel.unary_stream(SERVER_STREAM)(b"x")
            _wait_until(lambda: backend.count() == 1)
            with pytest.raises(errors.CircuitOpenError):
                channel.unary_unary(UNARY)(b"x")  # the permit is taken
            stream.cancel()
            assert channel.unary_unary(UNARY)(b"x") == b"ok"
        finally:
            release.set()
    assert backend.count() == 2


async def test_aio_cancelled_probe_frees_its_permit(clock: FakeClock,
                                                    registry: CollectorRegistry) -> None:
    """Aio: cancelling the task of the only in-flight probe lets the next call probe at once."""
    release = threading.Event()
    backend = Backend([Reply(wait=release), SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        breakers = _half_open(target, clock, registry, probes=1)
        try:
            async with aio_channel(target, clock, breaker=breakers) as channel:
                probe = asyncio.ensure_future(channel.unary_unary(UNARY)(b"x"))
                await _async_wait_until(lambda: backend.count() == 1)
                with pytest.raises(errors.CircuitOpenError):
                    await channel.unary_unary(UNARY)(b"x")
                probe.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await probe
                assert await channel.unary_unary(UNARY)(b"x") == b"ok"
        finally:
            release.set()
    assert backend.count() == 2


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_sync_open_breaker_sends_nothing(clock: FakeClock, registry: CollectorRegistry) -> None:
    """Sync: after the threshold an open breaker fails at once, sends nothing, is counted."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        breakers = ChannelBreakers(target, BreakerSettings(failure_threshold=2, reset_timeout=30),
                                   clock=clock.now, registry=registry)
        channel = sync_channel(target, clock, breaker=breakers, retry=None)
        with capture_logs() as logs:
            for _ in range(2):
                with pytest.raises(errors.NetworkError):
                    channel.unary_unary(UNARY)(b"x")
            clock.advance(12)
            with pytest.raises(errors.CircuitOpenError) as caught:
                channel.unary_unary(UNARY)(b"x")
            with pytest.raises(grpc.RpcError):
                list(channel.unary_stream(SERVER_STREAM)(b"x"))
    assert backend.count() == 2
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert caught.value.retry_after == pytest.approx(18)
    assert _metric(registry, "octollm_client_circuit_rejected_total",
                   target=target, method="") == 2
    assert _metric(registry, "octollm_client_circuit_state", target=target, method="") == 2
    assert _metric(registry, "octollm_client_circuit_transitions_total", target=target,
                   method="", from_state="closed", to_state="open") == 1
    opened = [e for e in logs if e["event"] == "circuit_breaker_state_changed"]
    assert [(e["from_state"], e["to_state"], e["log_level"]) for e in opened] == [
        ("closed", "open", "warning")]


async def test_aio_open_breaker_sends_nothing(clock: FakeClock,
                                              registry: CollectorRegistry) -> None:
    """Aio: after the threshold an open breaker fails at once, sends nothing, is counted."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        breakers = ChannelBreakers(target, BreakerSettings(failure_threshold=2, reset_timeout=30),
                                   clock=clock.now, registry=registry)
        async with aio_channel(target, clock, breaker=breakers, retry=None) as channel:
            for _ in range(2):
                with pytest.raises(errors.NetworkError):
                    await channel.unary_unary(UNARY)(b"x")
            call = channel.unary_unary(UNARY)(b"x")
            with pytest.raises(errors.CircuitOpenError) as caught:
                await call
            assert await call.code() is grpc.StatusCode.UNAVAILABLE
            with pytest.raises(errors.CircuitOpenError):
                async for _ in channel.unary_stream(SERVER_STREAM)(b"x"):
                    pass
    assert backend.count() == 2
    assert caught.value.retry_after == pytest.approx(30)
    assert _metric(registry, "octollm_client_circuit_rejected_total",
                   target=target, method="") == 2


def test_sync_breaker_opening_mid_retry_ends_the_call(clock: FakeClock,
                                                      registry: CollectorRegistry) -> None:
    """Sync: when retries trip the breaker, the next attempt is not sent: CircuitOpenError."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        breakers = ChannelBreakers(target, BreakerSettings(failure_threshold=2),
                                   clock=clock.now, registry=registry)
        channel = sync_channel(target, clock, breaker=breakers, retry=RetryPolicy(max_attempts=5))
        with pytest.raises(errors.CircuitOpenError):
            channel.unary_unary(UNARY)(b"x")
    assert backend.count() == 2


async def test_aio_breaker_opening_mid_retry_ends_the_call(clock: FakeClock,
                                                           registry: CollectorRegistry) -> None:
    """Aio: when retries trip the breaker, the next attempt is not sent: CircuitOpenError."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        breakers = ChannelBreakers(target, BreakerSettings(failure_threshold=2),
                                   clock=clock.now, registry=registry)
        async with aio_channel(target, clock, breaker=breakers,
                               retry=RetryPolicy(max_attempts=5)) as channel:
            with pytest.raises(errors.CircuitOpenError):
                await channel.unary_unary(UNARY)(b"x")
    assert backend.count() == 2


def test_sync_client_errors_never_trip_the_breaker(clock: FakeClock,
                                                   registry: CollectorRegistry) -> None:
    """Sync: INVALID_ARGUMENT answers, however many, leave the breaker closed."""
    backend = Backend([Reply(grpc.StatusCode.INVALID_ARGUMENT, messages=0)], clock)
    with sync_server([backend.handler()]) as target:
        breakers = ChannelBreakers(target, BreakerSettings(failure_threshold=2),
                                   clock=clock.now, registry=registry)
        channel = sync_channel(target, clock, breaker=breakers)
        for _ in range(5):
            with pytest.raises(errors.ValidationError):
                channel.unary_unary(UNARY)(b"x")
    assert backend.count() == 5
    assert breakers.for_method(UNARY).state is CircuitState.CLOSED


# -- wiring: which breaker guards which call --------------------------------------------------


def test_sync_plain_breaker_guards_every_method(clock: FakeClock,
                                               registry: CollectorRegistry) -> None:
    """Sync: a ChannelBreaker passed as breaker= is used (for all methods), not dropped."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        breaker = ChannelBreaker(target, BreakerSettings(failure_threshold=1, reset_timeout=5),
                                 clock=clock.now, registry=registry)
        channel = sync_channel(target, clock, breaker=breaker, retry=None)
        with pytest.raises(errors.NetworkError):
            channel.unary_unary(UNARY)(b"x")
        with pytest.raises(errors.CircuitOpenError) as caught:
            channel.unary_unary(OTHER)(b"x")
    assert backend.count() == 1
    assert breaker.state is CircuitState.OPEN
    assert caught.value.details == {"target": target}
    assert caught.value.retry_after == 5


async def test_aio_plain_breaker_guards_every_method(clock: FakeClock,
                                                    registry: CollectorRegistry) -> None:
    """Aio: a ChannelBreaker passed as breaker= is used (for all methods), not dropped."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        breaker = ChannelBreaker(target, BreakerSettings(failure_threshold=1, reset_timeout=5),
                                 clock=clock.now, registry=registry)
        async with aio_channel(target, clock, breaker=breaker, retry=None) as channel:
            with pytest.raises(errors.NetworkError):
                await channel.unary_unary(UNARY)(b"x")
            with pytest.raises(errors.CircuitOpenError) as caught:
                await channel.unary_unary(OTHER)(b"x")
    assert backend.count() == 1
    assert caught.value.details == {"target": target}


def test_sync_per_method_breakers_open_alone(clock: FakeClock,
                                            registry: CollectorRegistry) -> None:
    """Sync: per_method: a failing method's breaker opens; another method still reaches the
    server; the rejection names the target and the method."""
    backend = Backend([FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        breakers = ChannelBreakers(target, BreakerSettings(failure_threshold=1, per_method=True),
                                   clock=clock.now, registry=registry)
        channel = sync_channel(target, clock, breaker=breakers, retry=None)
        with pytest.raises(errors.NetworkError):
            channel.unary_unary(UNARY)(b"x")
        assert channel.unary_unary(OTHER)(b"x") == b"other"
        with pytest.raises(errors.CircuitOpenError) as caught:
            channel.unary_unary(UNARY)(b"x")
    assert backend.count() == 2
    assert caught.value.details == {"target": target, "method": UNARY}
    assert caught.value.message.startswith(f"Circuit breaker for {target} is open")
    assert _metric(registry, "octollm_client_circuit_rejected_total",
                   target=target, method=UNARY) == 1


async def test_aio_per_method_breakers_open_alone(clock: FakeClock,
                                                 registry: CollectorRegistry) -> None:
    """Aio: per_method: a failing method's breaker opens; another method still reaches the
    server; the rejection names the target and the method."""
    backend = Backend([FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        breakers = ChannelBreakers(target, BreakerSettings(failure_threshold=1, per_method=True),
                                   clock=clock.now, registry=registry)
        async with aio_channel(target, clock, breaker=breakers, retry=None) as channel:
            with pytest.raises(errors.NetworkError):
                await channel.unary_unary(UNARY)(b"x")
            assert await channel.unary_unary(OTHER)(b"x") == b"other"
            with pytest.raises(errors.CircuitOpenError) as caught:
                await channel.unary_unary(UNARY)(b"x")
    assert backend.count() == 2
    assert caught.value.details == {"target": target, "method": UNARY}
