"""resilient_interceptors on a channel built elsewhere does all that resilient_channel does."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry

from octollm_grpc.client import RetryPolicy, resilient_channel, resilient_interceptors
from octollm_grpc.client import aio as client_aio
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.testing import FakeClock
from tests.servers import aio_server, sync_server

DOWN = "/test.Down/Record"
MIDDLE = "/test.Middle/Call"
POLICY = RetryPolicy(max_attempts=4, initial_backoff=0.1, max_backoff=1.0)
NO_RETRIES = [("grpc.enable_retries", 0)]
CALLER_TIMEOUT = 7.0
METRICS = ("grpc_client_started_total", "grpc_client_handled_total",
           "grpc_client_handling_seconds_count", "octollm_client_attempts_total",
           "octollm_client_retries_total", "octollm_client_throttled_total")


class Downstream:
    """Fails the first two attempts with UNAVAILABLE, then answers; records each attempt."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, float | None]] = []
        self._lock = threading.Lock()

    def record(self, request: bytes, context: Any) -> bytes:
        remaining = context.time_remaining()
        with self._lock:
            self.seen.append((dict(context.invocation_metadata()).get("x-request-id"),
                              None if remaining is None or remaining > 1e9 else remaining))
            failing = len(self.seen) <= 2
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        return b"done"

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("test.Down", {
            "Record": grpc.unary_unary_rpc_method_handler(self.record)})


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in METRICS:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _keywords(clock: FakeClock, registry: CollectorRegistry, sleep: Any) -> dict[str, Any]:
    return {"retry": POLICY, "budget": None, "breaker": None, "rng": random.Random(7),
            "clock": clock.now, "sleep": sleep, "registry": registry}


def _check(downstream: Downstream, answer: bytes, registry: CollectorRegistry) -> None:
    assert answer == b"done"
    assert [rid for rid, _ in downstream.seen] == ["rid-own"] * 3  # retried, id propagated
    for _, remaining in downstream.seen:
        # The caller's deadline reached every attempt (not the default "no deadline").
        assert remaining is not None and 0 < remaining <= CALLER_TIMEOUT * 1.1
    samples = _samples(registry)
    labels = {"grpc_method": "Record", "grpc_service": "test.Down", "grpc_type": "unary"}

    def value(name: str, **more: str) -> float:
        return samples[(name, tuple(sorted({**labels, **more}.items())))]

    assert value("grpc_client_started_total") == 1
    assert value("grpc_client_handled_total", grpc_code="OK") == 1
    assert value("octollm_client_attempts_total", grpc_code="Unavailable") == 2
    assert value("octollm_client_retries_total") == 2


def _run_sync(make: Callable[[str, FakeClock, CollectorRegistry], grpc.Channel]
              ) -> tuple[Downstream, bytes, CollectorRegistry]:
    downstream, clock, registry = Downstream(), FakeClock(), CollectorRegistry()
    with sync_server([downstream.handler()]) as down_target:
        down = make(down_target, clock, registry)
        call = down.unary_unary(DOWN)

        def handle(request: bytes, context: Any) -> bytes:
            answer: bytes = call(request)
            return answer

        middle = grpc.method_handlers_generic_handler("test.Middle", {
            "Call": grpc.unary_unary_rpc_method_handler(handle)})
        with sync_server([middle], server_interceptors(logger=False, metrics=False)) as target:
            with grpc.insecure_channel(target) as channel:
                answer = channel.unary_unary(MIDDLE)(
                    b"x", timeout=CALLER_TIMEOUT, metadata=(("x-request-id", "rid-own"),))
        down.close()
    return downstream, answer, registry


def test_sync_interceptors_on_an_own_channel_match_resilient_channel() -> None:
    """Sync: retries, request id, deadline and client metrics as resilient_channel's."""
    def own(target: str, clock: FakeClock, registry: CollectorRegistry) -> grpc.Channel:
        raw = grpc.insecure_channel(target, NO_RETRIES)
        parts = resilient_interceptors(target, **_keywords(clock, registry, clock.sleep))
        return grpc.intercept_channel(raw, *parts)

    def ours(target: str, clock: FakeClock, registry: CollectorRegistry) -> grpc.Channel:
        return resilient_channel(target, **_keywords(clock, registry, clock.sleep))

    built, answer, registry = _run_sync(own)
    _check(built, answer, registry)
    reference, _, reference_registry = _run_sync(ours)
    assert [rid for rid, _ in built.seen] == [rid for rid, _ in reference.seen]
    assert _samples(registry) == _samples(reference_registry)


async def _run_aio(own: bool) -> tuple[Downstream, bytes, CollectorRegistry]:
    downstream, clock, registry = Downstream(), FakeClock(), CollectorRegistry()
    keywords = _keywords(clock, registry, clock.async_sleep)
    with sync_server([downstream.handler()]) as down_target:
        if own:
            down = grpc.aio.insecure_channel(
                down_target, NO_RETRIES,
                interceptors=client_aio.resilient_interceptors(down_target, **keywords))
        else:
            down = client_aio.resilient_channel(down_target, **keywords)
        call = down.unary_unary(DOWN)

        async def handle(request: bytes, context: Any) -> bytes:
            answer: bytes = await call(request)
            return answer

        middle = grpc.method_handlers_generic_handler("test.Middle", {
            "Call": grpc.unary_unary_rpc_method_handler(handle)})
        stack = server_aio.server_interceptors(logger=False, metrics=False)
        async with aio_server([middle], stack) as target:
            async with grpc.aio.insecure_channel(target) as channel:
                answer = await channel.unary_unary(MIDDLE)(
                    b"x", timeout=CALLER_TIMEOUT, metadata=(("x-request-id", "rid-own"),))
        await down.close()
    return downstream, answer, registry


async def test_aio_interceptors_on_an_own_channel_match_resilient_channel() -> None:
    """Aio: retries, request id, deadline and client metrics as resilient_channel's."""
    built, answer, registry = await _run_aio(own=True)
    _check(built, answer, registry)
    reference, _, reference_registry = await _run_aio(own=False)
    assert [rid for rid, _ in built.seen] == [rid for rid, _ in reference.seen]
    assert _samples(registry) == _samples(reference_registry)
