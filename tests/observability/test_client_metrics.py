"""Client metrics on real channels, sync and aio: one handled count per call, every attempt."""

from __future__ import annotations

import asyncio
import threading

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc.client import BreakerSettings, ChannelBreaker, RetryBudget, RetryPolicy
from octollm_grpc.observability._client_metrics import UNKNOWN, ClientMetrics
from octollm_grpc.testing import FakeClock
from tests.client.backend import (
    BIDI,
    CLIENT_STREAM,
    FAIL,
    SERVER_STREAM,
    SERVICE,
    SUCCEED,
    UNARY,
    Backend,
    Reply,
)
from tests.client.channels import aio_channel, sync_channel
from tests.servers import sync_server

POLICY = RetryPolicy(max_attempts=4, initial_backoff=0.1, max_backoff=1.0)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _labels(method: str, grpc_type: str = "unary") -> dict[str, str]:
    return {"grpc_type": grpc_type, "grpc_service": SERVICE, "grpc_method": method}


def _assert_two_retries_then_ok(registry: CollectorRegistry, clock: FakeClock) -> None:
    unary = _labels("Unary")
    assert _value(registry, "grpc_client_started_total", **unary) == 1
    assert _value(registry, "grpc_client_handled_total", **unary, grpc_code="OK") == 1
    assert _value(registry, "grpc_client_handled_total", **unary, grpc_code="Unavailable") == 0
    assert _value(registry, "octollm_client_attempts_total", **unary,
                  grpc_code="Unavailable") == 2
    assert _value(registry, "octollm_client_attempts_total", **unary, grpc_code="OK") == 1
    assert _value(registry, "octollm_client_retries_total", **unary) == 2
    assert _value(registry, "octollm_client_throttled_total", **unary) == 0
    assert _value(registry, "grpc_client_handling_seconds_count", **unary) == 1
    # On the channel's (fake) clock the call took exactly its two backoff waits.
    assert _value(registry, "grpc_client_handling_seconds_sum", **unary) == pytest.approx(
        sum(clock.sleeps))


def test_sync_retried_call_counts_once_handled_and_every_attempt(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """Sync: fail, fail, succeed -> started 1, handled OK 1, attempts 2 x Unavailable + 1 OK."""
    backend = Backend([FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, retry=POLICY, registry=registry)
        assert channel.unary_unary(UNARY)(b"x") == b"ok"
    _assert_two_retries_then_ok(registry, clock)


async def test_aio_retried_call_counts_once_handled_and_every_attempt(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """Aio: fail, fail, succeed -> started 1, handled OK 1, attempts 2 x Unavailable + 1 OK."""
    backend = Backend([FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, retry=POLICY, registry=registry) as channel:
            assert await channel.unary_unary(UNARY)(b"x") == b"ok"
    _assert_two_retries_then_ok(registry, clock)


def _assert_throttled(registry: CollectorRegistry) -> None:
    unary = _labels("Unary")
    assert _value(registry, "grpc_client_handled_total", **unary, grpc_code="Unavailable") == 1
    assert _value(registry, "octollm_client_attempts_total", **unary,
                  grpc_code="Unavailable") == 1
    assert _value(registry, "octollm_client_retries_total", **unary) == 0
    assert _value(registry, "octollm_client_throttled_total", **unary) == 1


def test_sync_budget_refusal_counts_throttled(clock: FakeClock,
                                              registry: CollectorRegistry) -> None:
    """Sync: a budget with no spare token refuses the retry: throttled 1, handled Unavailable."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, retry=POLICY, registry=registry,
                               budget=RetryBudget(max_tokens=1, token_ratio=0.1))
        with pytest.raises(errors.NetworkError):
            channel.unary_unary(UNARY)(b"x")
    assert backend.count() == 1
    _assert_throttled(registry)


async def test_aio_budget_refusal_counts_throttled(clock: FakeClock,
                                                   registry: CollectorRegistry) -> None:
    """Aio: a budget with no spare token refuses the retry: throttled 1, handled Unavailable."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, retry=POLICY, registry=registry,
                               budget=RetryBudget(max_tokens=1, token_ratio=0.1)) as channel:
            with pytest.raises(errors.NetworkError):
                await channel.unary_unary(UNARY)(b"x")
    assert backend.count() == 1
    _assert_throttled(registry)


def _assert_stream(registry: CollectorRegistry) -> None:
    stream = _labels("ServerStream", "server_stream")
    assert _value(registry, "grpc_client_started_total", **stream) == 1
    assert _value(registry, "grpc_client_handled_total", **stream, grpc_code="OK") == 1
    assert _value(registry, "octollm_client_attempts_total", **stream,
                  grpc_code="Unavailable") == 1
    assert _value(registry, "octollm_client_attempts_total", **stream, grpc_code="OK") == 1
    assert _value(registry, "octollm_client_retries_total", **stream) == 1


def test_sync_response_stream_counts_its_end(clock: FakeClock,
                                             registry: CollectorRegistry) -> None:
    """Sync: a response stream retried once, then read to its end: handled OK once."""
    backend = Backend([FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, retry=POLICY, registry=registry)
        stream = channel.unary_stream(SERVER_STREAM)(b"x")
        assert list(stream) == [b"m0", b"m1"]
        with pytest.raises(StopIteration):
            next(stream)  # reading past the end must not count the call again
    _assert_stream(registry)


async def test_aio_response_stream_counts_its_end(clock: FakeClock,
                                                  registry: CollectorRegistry) -> None:
    """Aio: a response stream retried once, then read to its end: handled OK once."""
    backend = Backend([FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, retry=POLICY, registry=registry) as channel:
            call = channel.unary_stream(SERVER_STREAM)(b"x")
            assert [m async for m in call] == [b"m0", b"m1"]
    _assert_stream(registry)


def test_sync_stream_failure_counts_final_code(clock: FakeClock,
                                               registry: CollectorRegistry) -> None:
    """Sync: a response stream that keeps failing ends as handled Unavailable, once."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, retry=RetryPolicy(max_attempts=2),
                               registry=registry)
        with pytest.raises(errors.NetworkError):
            list(channel.unary_stream(SERVER_STREAM)(b"x"))
    stream = _labels("ServerStream", "server_stream")
    assert _value(registry, "grpc_client_handled_total", **stream,
                  grpc_code="Unavailable") == 1
    assert _value(registry, "octollm_client_attempts_total", **stream,
                  grpc_code="Unavailable") == 2


def test_default_registry_is_used_without_one(clock: FakeClock) -> None:
    """Sync: with no registry given the metrics land in prometheus_client's global one."""
    backend = Backend([SUCCEED], clock)
    default = prometheus_client.REGISTRY
    unary = _labels("Unary")
    before = _value(default, "grpc_client_handled_total", **unary, grpc_code="OK")
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, registry=None)
        assert channel.unary_unary(UNARY)(b"x") == b"ok"
    assert _value(default, "grpc_client_handled_total", **unary, grpc_code="OK") == before + 1


def test_method_labels_are_bounded(registry: CollectorRegistry) -> None:
    """Methods past the bound, and names that are not /service/method, share 'unknown'."""
    metrics = ClientMetrics(registry, max_methods=2)
    metrics.method("/a.S/One").started.inc()
    metrics.method("not-a-method").started.inc()
    metrics.method("/a.S/Two").started.inc()
    metrics.method("/a.S/Three").started.inc()
    metrics.method(b"/a.S/One").started.inc()
    assert _value(registry, "grpc_client_started_total", grpc_type="unary",
                  grpc_service="a.S", grpc_method="One") == 2
    assert _value(registry, "grpc_client_started_total", grpc_type="unary",
                  grpc_service=UNKNOWN, grpc_method=UNKNOWN) == 2
    assert _value(registry, "grpc_client_started_total", grpc_type="unary",
                  grpc_service="a.S", grpc_method="Three") == 0


def test_sync_breaker_refusal_is_handled_unavailable_without_an_attempt(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """Sync: after the breaker opens, a refused call is handled Unavailable; no attempt sent."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        breaker = ChannelBreaker(target, BreakerSettings(failure_threshold=1), clock=clock.now,
                                 registry=registry)
        channel = sync_channel(target, clock, retry=None, breaker=breaker, registry=registry)
        call = channel.unary_unary(UNARY)
        with pytest.raises(errors.NetworkError):
            call(b"x")  # opens the breaker
        with pytest.raises(errors.CircuitOpenError):
            call(b"x")  # refused, never sent
    unary = _labels("Unary")
    assert backend.count() == 1
    assert _value(registry, "grpc_client_started_total", **unary) == 2
    assert _value(registry, "grpc_client_handled_total", **unary, grpc_code="Unavailable") == 2
    assert _value(registry, "octollm_client_attempts_total", **unary,
                  grpc_code="Unavailable") == 1


def test_sync_bidi_and_client_stream_are_labelled_by_shape(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """Sync: a client stream and a bidi stream count under their own grpc_type."""
    backend = Backend([SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, registry=registry)
        assert channel.stream_unary(CLIENT_STREAM)(iter([b"a", b"b"])) == b"2"
        assert list(channel.stream_stream(BIDI)(iter([b"a", b"b"]))) == [b"a", b"b"]
    for method, grpc_type in (("ClientStream", "client_stream"), ("Bidi", "bidi_stream")):
        labels = _labels(method, grpc_type)
        assert _value(registry, "grpc_client_started_total", **labels) == 1
        assert _value(registry, "grpc_client_handled_total", **labels, grpc_code="OK") == 1


async def test_aio_client_stream_and_bidi_are_counted_when_they_end(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """Aio: a client stream (write style) and a bidi stream are handled OK once each."""
    backend = Backend([SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, registry=registry) as channel:
            call = channel.stream_unary(CLIENT_STREAM)()
            await call.write(b"a")
            await call.done_writing()
            assert await call == b"1"
            bidi = channel.stream_stream(BIDI)(iter([b"a", b"b"]))
            assert [m async for m in bidi] == [b"a", b"b"]
    for method, grpc_type in (("ClientStream", "client_stream"), ("Bidi", "bidi_stream")):
        labels = _labels(method, grpc_type)
        assert _value(registry, "grpc_client_started_total", **labels) == 1
        assert _value(registry, "grpc_client_handled_total", **labels, grpc_code="OK") == 1


async def test_aio_breaker_refusal_is_handled_unavailable_without_an_attempt(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """Aio: after the breaker opens, a refused call is handled Unavailable; no attempt sent."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        breaker = ChannelBreaker(target, BreakerSettings(failure_threshold=1), clock=clock.now,
                                 registry=registry)
        async with aio_channel(target, clock, retry=None, breaker=breaker,
                               registry=registry) as channel:
            call = channel.unary_unary(UNARY)
            with pytest.raises(errors.NetworkError):
                await call(b"x")  # opens the breaker
            with pytest.raises(errors.CircuitOpenError):
                await call(b"x")  # refused, never sent
    unary = _labels("Unary")
    assert backend.count() == 1
    assert _value(registry, "grpc_client_started_total", **unary) == 2
    assert _value(registry, "grpc_client_handled_total", **unary, grpc_code="Unavailable") == 2
    assert _value(registry, "octollm_client_attempts_total", **unary,
                  grpc_code="Unavailable") == 1


async def test_aio_unsendable_metadata_is_handled_invalid_argument_without_an_attempt(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """Aio: a call refused for its metadata is handled InvalidArgument; no attempt counted."""
    backend = Backend([SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, registry=registry) as channel:
            with pytest.raises(errors.InvalidInputError):
                await channel.unary_unary(UNARY)(b"x", metadata=(("authorization", "\x01"),))
    unary = _labels("Unary")
    assert backend.count() == 0
    assert _value(registry, "grpc_client_started_total", **unary) == 1
    assert _value(registry, "grpc_client_handled_total", **unary,
                  grpc_code="InvalidArgument") == 1
    assert _value(registry, "grpc_client_handling_seconds_count", **unary) == 1
    assert _value(registry, "octollm_client_attempts_total", **unary,
                  grpc_code="InvalidArgument") == 0


def test_sync_future_retried_call_counts_once_handled_and_every_attempt(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """Sync ``.future()``: fail, fail, succeed in the background -> the same counts as a
    blocking call (handled OK once, when the future resolves)."""
    backend = Backend([FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, retry=POLICY, registry=registry)
        future = channel.unary_unary(UNARY).future(b"x")
        counted = threading.Event()
        # Done callbacks run in the order added: ours (the count) ran before this one.
        future.add_done_callback(lambda _future: counted.set())
        assert future.result(timeout=10) == b"ok"
        assert counted.wait(10)
    _assert_two_retries_then_ok(registry, clock)


async def test_aio_cancelled_call_is_handled_cancelled(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """Aio: a call its caller cancels while it waits is handled Cancelled, once."""
    release = threading.Event()
    backend = Backend([Reply(wait=release)], clock)
    with sync_server([backend.handler()]) as target:
        try:
            async with aio_channel(target, clock, registry=registry) as channel:
                task = asyncio.ensure_future(channel.unary_unary(UNARY)(b"x"))
                while backend.count() == 0:  # the attempt reached the server
                    await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        finally:
            release.set()
    unary = _labels("Unary")
    assert _value(registry, "grpc_client_started_total", **unary) == 1
    assert _value(registry, "grpc_client_handled_total", **unary, grpc_code="Canceled") == 1
    assert _value(registry, "grpc_client_handling_seconds_count", **unary) == 1
