"""Breaker operations over real channels, and the shared registries under 100,000 targets."""

from __future__ import annotations

import contextlib
import gc
import tracemalloc
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc._core.budget import RetryBudget
from octollm_grpc.client import ChannelBreaker
from octollm_grpc.client._breaker import ChannelBreakers
from octollm_grpc.testing import FakeClock
from tests.client.backend import FAIL, SUCCEED, UNARY, Backend
from tests.client.channels import aio_channel, sync_channel
from tests.client.test_breaker_operations import _Recorder
from tests.servers import sync_server


def test_sync_channel_refuses_calls_while_forced_open(clock: FakeClock,
                                                      registry: CollectorRegistry) -> None:
    """A real channel whose breaker is forced open sends nothing; after reset it calls again."""
    backend = Backend([SUCCEED])
    breaker = ChannelBreaker("forced", clock=clock.now, registry=registry)
    with sync_server([backend.handler()]) as target, \
            sync_channel(target, clock, breaker=breaker) as channel:
        breaker.force_open()
        with pytest.raises(errors.CircuitOpenError):
            channel.unary_unary(UNARY)(b"x", timeout=5)
        assert backend.attempts == []
        breaker.reset()
        assert channel.unary_unary(UNARY)(b"x", timeout=5) == b"ok"
    assert len(backend.attempts) == 1


async def test_aio_channel_calls_reach_the_listener(clock: FakeClock,
                                                    registry: CollectorRegistry) -> None:
    """Over a real aio channel, each call's verdict reaches the listener."""
    backend, recorder = Backend([SUCCEED, FAIL, SUCCEED]), _Recorder()
    breaker = ChannelBreaker("aio-listened", clock=clock.now, registry=registry,
                             listeners=[recorder])
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, breaker=breaker, retry=None) as channel:
            for _ in range(3):
                with contextlib.suppress(errors.NetworkError):
                    await channel.unary_unary(UNARY)(b"x", timeout=5)
    assert recorder.heard == ["success", "failure", "success"]


def _traced(run: Any, start: int, stop: int) -> int:
    run(start, stop)
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_a_hundred_thousand_targets_keep_memory_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    """100,000 targets through both shared registries: traced memory grows < 64 KiB past 4,096."""
    monkeypatch.setattr(ChannelBreakers, "_shared", type(ChannelBreakers._shared)())
    monkeypatch.setattr(RetryBudget, "_shared", type(RetryBudget._shared)())
    registry = CollectorRegistry()

    def run(start: int, stop: int) -> None:
        for index in range(start, stop):
            ChannelBreakers.for_target(f"t{index}", registry=registry)
            RetryBudget.for_target(f"t{index}")

    tracemalloc.start()
    try:
        warm = _traced(run, 0, 4096)  # the registries are full from here on
        after = _traced(run, 4096, 100_000)
    finally:
        tracemalloc.stop()
    print(f"\ntraced after 4,096 targets: {warm} B; after 100,000: {after} B")
    assert len(ChannelBreakers._shared) == len(RetryBudget._shared) == 1024
    assert after - warm < 64 * 1024


def test_evicted_breakers_leave_no_metric_series(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,500 targets with live breakers: the registry exports series for 1,024 at most."""
    monkeypatch.setattr(ChannelBreakers, "_shared", type(ChannelBreakers._shared)())
    registry = CollectorRegistry()
    clock = FakeClock()
    for index in range(2500):
        breaker = ChannelBreakers.for_target(f"t{index}", registry=registry,
                                             clock=clock.now).for_method("")
        if index % 2:
            breaker.force_open(1)  # transitions and operations series too
    families = {family.name: len(family.samples) for family in registry.collect()}
    assert families["octollm_client_circuit_state"] == 1024
    assert families["octollm_client_circuit_operations"] <= 2 * 1024  # _total and _created
    assert families["octollm_client_circuit_transitions"] <= 2 * 1024
