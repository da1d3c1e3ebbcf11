"""The shared attempt core: what every stack's first attempt does with the breaker permit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from grpc import aio
from prometheus_client import CollectorRegistry

from octollm_grpc.client import BreakerSettings, CircuitBreaker, CircuitState, Resilience
from octollm_grpc.client.aio_interceptors import aio_interceptors
from octollm_grpc.client.interceptors import ResilientInterceptor
from octollm_grpc.testing import FakeClock


class _StartFailed(Exception):
    """What a continuation raises when the call cannot even start (e.g. a closed channel)."""


def _half_open(clock: FakeClock) -> tuple[CircuitBreaker, Resilience]:
    breaker = CircuitBreaker("attempts:1", BreakerSettings(failure_threshold=1, reset_timeout=1.0,
                                                           half_open_probes=1),
                             clock=clock.now, registry=CollectorRegistry())
    breaker.on_failure(breaker.acquire())
    clock.advance(1.0)
    assert breaker.state is CircuitState.HALF_OPEN
    return breaker, Resilience(retry=None, budget=None, breakers=breaker, clock=clock.now)


def _details(method: str | bytes) -> aio.ClientCallDetails:
    return aio.ClientCallDetails(method, None, None, None, None)


def _never_starts(_details: Any, _request: Any) -> Any:
    raise _StartFailed


async def _never_starts_async(_details: Any, _request: Any) -> Any:
    raise _StartFailed


@pytest.mark.parametrize("shape", [0, 1, 2, 3])
def test_aio_attempt_that_never_started_frees_its_probe_permit(clock: FakeClock,
                                                               shape: int) -> None:
    """An aio call whose first attempt cannot start leaves the half-open probe permit free."""
    breaker, core = _half_open(clock)
    interceptor = aio_interceptors(core)[shape]
    method = ("intercept_unary_unary", "intercept_unary_stream", "intercept_stream_unary",
              "intercept_stream_stream")[shape]

    async def call() -> None:
        with pytest.raises(_StartFailed):
            await getattr(interceptor, method)(_never_starts_async, _details(b"/s/M"), iter(()))

    asyncio.run(call())
    breaker.release(breaker.acquire())  # the permit is free: a probe is admitted again


@pytest.mark.parametrize("method", ["intercept_unary_unary", "intercept_unary_stream",
                                    "intercept_stream_unary", "intercept_stream_stream"])
def test_sync_attempt_that_never_started_frees_its_probe_permit(clock: FakeClock,
                                                                method: str) -> None:
    """A sync call whose first attempt cannot start leaves the half-open probe permit free."""
    breaker, core = _half_open(clock)
    interceptor = ResilientInterceptor(core, clock.sleep)
    with pytest.raises(_StartFailed):
        getattr(interceptor, method)(_never_starts, _details("/s/M"), iter(()))
    breaker.release(breaker.acquire())
