"""Breakers for the client's unit tests: one per method of a fake target, failed or succeeded
through their permits."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from octollm_grpc.client import BreakerSettings, ChannelBreaker, CircuitState
from octollm_grpc.testing import FakeClock

CLOSED, HALF_OPEN, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN


def edge_breaker(clock: FakeClock, registry: CollectorRegistry | None = None,
                 **settings: object) -> ChannelBreaker:
    """A breaker of target ``edge:1``, method ``/s/M``, on ``clock``."""
    return ChannelBreaker("edge:1", BreakerSettings(**settings),  # type: ignore[arg-type]
                          method="/s/M", clock=clock.now, registry=registry or CollectorRegistry())


def fail(breaker: ChannelBreaker, times: int = 1) -> None:
    """Report ``times`` failed calls through their permits."""
    for _ in range(times):
        breaker.on_failure(breaker.acquire())


def succeed(breaker: ChannelBreaker, times: int = 1) -> None:
    """Report ``times`` successful calls through their permits."""
    for _ in range(times):
        breaker.on_success(breaker.acquire())
