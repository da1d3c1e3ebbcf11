"""The caller's own deadline or cancellation says nothing about the target's health.

An attempt that ends ``DEADLINE_EXCEEDED`` because the caller's deadline (passed, or propagated
from an incoming call) ran out, or ``CANCELLED`` because the caller cancelled, is no verdict
for the circuit breaker. Only the policy's own per-attempt timeout, or a server that answers
``DEADLINE_EXCEEDED`` itself, counts against the target. Deadlines here are real (grpc core
enforces them) but short.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors as e
from octollm_grpc.client import (
    BreakerSettings,
    ChannelBreaker,
    CircuitState,
    RetryPolicy,
    resilient_channel,
)
from octollm_grpc.client import aio as client_aio
from tests.client.backend import UNARY, Backend, Reply
from tests.servers import sync_server

CALLER_TIMEOUT = 0.1
SETTINGS = BreakerSettings(failure_threshold=2, reset_timeout=60)


@pytest.fixture
def hanging() -> Iterator[tuple[Backend, str, threading.Event]]:
    """A server whose replies wait until the test ends (only the caller's deadline ends them)."""
    release = threading.Event()
    backend = Backend([Reply(wait=release)])
    with sync_server([backend.handler()]) as target:
        try:
            yield backend, target, release
        finally:
            release.set()


def _breaker() -> ChannelBreaker:
    return ChannelBreaker("backend", SETTINGS, registry=CollectorRegistry())


def test_sync_callers_deadline_is_no_verdict(
        hanging: tuple[Backend, str, threading.Event]) -> None:
    """Sync: three calls end on the caller's deadline; the breaker stays closed."""
    _, target, _ = hanging
    breaker = _breaker()
    with resilient_channel(target, breaker=breaker, budget=None,
                           registry=CollectorRegistry()) as channel:
        for _ in range(3):
            with pytest.raises(e.TimeoutError):
                channel.unary_unary(UNARY)(b"x", timeout=CALLER_TIMEOUT)
    assert breaker.state is CircuitState.CLOSED


async def test_aio_callers_deadline_is_no_verdict(
        hanging: tuple[Backend, str, threading.Event]) -> None:
    """aio: three calls end on the caller's deadline; the breaker stays closed."""
    _, target, _ = hanging
    breaker = _breaker()
    async with client_aio.resilient_channel(target, breaker=breaker, budget=None,
                                            registry=CollectorRegistry()) as channel:
        for _ in range(3):
            with pytest.raises(e.TimeoutError):
                await channel.unary_unary(UNARY)(b"x", timeout=CALLER_TIMEOUT)
    assert breaker.state is CircuitState.CLOSED


def test_sync_policy_timeout_counts(hanging: tuple[Backend, str, threading.Event]) -> None:
    """Sync: attempts cut by the policy's per-attempt timeout open the breaker."""
    _, target, _ = hanging
    breaker = _breaker()
    policy = RetryPolicy(max_attempts=1, per_attempt_timeout=CALLER_TIMEOUT)
    with resilient_channel(target, retry=policy, breaker=breaker, budget=None,
                           registry=CollectorRegistry()) as channel:
        for _ in range(2):
            with pytest.raises(e.TimeoutError):
                channel.unary_unary(UNARY)(b"x", timeout=30)
    assert breaker.state is CircuitState.OPEN


async def test_aio_policy_timeout_counts(hanging: tuple[Backend, str, threading.Event]) -> None:
    """aio: attempts cut by the policy's per-attempt timeout open the breaker."""
    _, target, _ = hanging
    breaker = _breaker()
    policy = RetryPolicy(max_attempts=1, per_attempt_timeout=CALLER_TIMEOUT)
    async with client_aio.resilient_channel(target, retry=policy, breaker=breaker, budget=None,
                                            registry=CollectorRegistry()) as channel:
        for _ in range(2):
            with pytest.raises(e.TimeoutError):
                await channel.unary_unary(UNARY)(b"x")
    assert breaker.state is CircuitState.OPEN


def test_server_answering_deadline_exceeded_counts() -> None:
    """A server answering DEADLINE_EXCEEDED itself, well before the caller's deadline: counted."""
    backend = Backend([Reply(grpc.StatusCode.DEADLINE_EXCEEDED, messages=0)])
    breaker = _breaker()
    with sync_server([backend.handler()]) as target, resilient_channel(
            target, retry=None, breaker=breaker, budget=None,
            registry=CollectorRegistry()) as channel:
        for _ in range(2):
            with pytest.raises(e.TimeoutError):
                channel.unary_unary(UNARY)(b"x", timeout=30)
    assert breaker.state is CircuitState.OPEN


def test_sync_caller_cancellation_is_no_verdict(
        hanging: tuple[Backend, str, threading.Event]) -> None:
    """Sync: futures the caller cancels leave the breaker closed."""
    _, target, _ = hanging
    breaker = _breaker()
    with resilient_channel(target, breaker=breaker, budget=None,
                           registry=CollectorRegistry()) as channel:
        for _ in range(3):
            future = channel.unary_unary(UNARY).future(b"x", timeout=30)
            assert future.cancel()
    assert breaker.state is CircuitState.CLOSED


async def test_aio_caller_cancellation_is_no_verdict(
        hanging: tuple[Backend, str, threading.Event]) -> None:
    """aio: calls the caller cancels leave the breaker closed."""
    backend, target, _ = hanging
    breaker = _breaker()
    async with client_aio.resilient_channel(target, breaker=breaker, budget=None,
                                            registry=CollectorRegistry()) as channel:
        for attempt in range(3):
            call = channel.unary_unary(UNARY)(b"x", timeout=30)
            for _ in range(500):  # bounded: until the server saw this attempt
                if len(backend.attempts) > attempt:
                    break
                await asyncio.sleep(0.01)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
    assert breaker.state is CircuitState.CLOSED
