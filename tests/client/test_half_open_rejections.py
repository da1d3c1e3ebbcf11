"""Half-open rejections ask callers to come back soon, not after the probe's expiry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc._core.breaker import HALF_OPEN_RETRY_AFTER
from octollm_grpc.client import BreakerSettings, ChannelBreaker, CircuitState
from octollm_grpc.testing import FakeClock


def test_half_open_rejection_retry_after_is_short() -> None:
    """A probe in flight (30 s probe timeout): others are told to retry within a second."""
    clock = FakeClock()
    breaker = ChannelBreaker("t", BreakerSettings(failure_threshold=1, reset_timeout=10),
                             clock=clock.now, registry=CollectorRegistry())
    breaker.on_failure(breaker.acquire())
    clock.advance(10)
    probe = breaker.acquire()
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(errors.CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == HALF_OPEN_RETRY_AFTER == 1.0
    clock.advance(29.8)  # the lost probe's permit frees in 0.2 s: that is sooner still
    with pytest.raises(errors.CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == pytest.approx(0.2)
    breaker.on_success(probe)
    assert breaker.state is CircuitState.CLOSED
