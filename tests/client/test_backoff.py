"""Backoff and server delays without a network: full-jitter draws, ceilings, pushback
and RetryInfo parsing, policies per method."""

from __future__ import annotations

import dataclasses
import random

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry

from octollm_grpc._core.backoff import MAX_PUSHBACK, STOP, full_jitter, server_delay
from octollm_grpc.client import (
    BreakerSettings,
    ChannelBreaker,
    CircuitState,
    RetryPolicies,
    RetryPolicy,
)
from octollm_grpc.status._limits import DETAILS_KEY, PUSHBACK_KEY
from octollm_grpc.testing import FakeClock

_C = grpc.StatusCode
CLOSED, HALF_OPEN, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN


def _breaker(clock: FakeClock, registry: CollectorRegistry | None = None,
             **settings: object) -> ChannelBreaker:
    return ChannelBreaker("edge:1", BreakerSettings(**settings),  # type: ignore[arg-type]
                          method="/s/M", clock=clock.now, registry=registry or CollectorRegistry())


def _fail(breaker: ChannelBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.on_failure(breaker.acquire())


def _succeed(breaker: ChannelBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.on_success(breaker.acquire())


# -- backoff ---------------------------------------------------------------------------------

DRAWS = 10_000


@pytest.mark.parametrize("retry", [1, 2, 3, 4, 5, 6])
def test_full_jitter_draws_lie_in_bounds_and_spread(retry: int) -> None:
    """10 000 seeded draws for retry n lie in [0, min(initial*mult^(n-1), max)], spread evenly."""
    policy = RetryPolicy(initial_backoff=0.1, backoff_multiplier=2.0, max_backoff=1.0)
    ceiling = min(0.1 * 2.0 ** (retry - 1), 1.0)
    assert policy.backoff_ceiling(retry) == pytest.approx(ceiling)
    rng = random.Random(retry)
    draws = [full_jitter(policy, retry, rng) for _ in range(DRAWS)]
    assert all(0.0 <= d <= ceiling for d in draws)
    deciles = [0] * 10
    for d in draws:
        deciles[min(int(d / ceiling * 10), 9)] += 1
    assert all(850 <= count <= 1150 for count in deciles), deciles
    assert sum(draws) / DRAWS == pytest.approx(ceiling / 2, rel=0.03)
    assert min(draws) < 0.01 * ceiling and max(draws) > 0.99 * ceiling


def test_backoff_ceiling_never_overflows() -> None:
    """A huge retry number is capped at max_backoff, not an overflow."""
    policy = RetryPolicy(initial_backoff=0.5, backoff_multiplier=10.0, max_backoff=7.0)
    assert policy.backoff_ceiling(10_000) == 7.0


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"max_attempts": 2.5}, {"initial_backoff": 0},
    {"initial_backoff": float("nan")}, {"max_backoff": 0.01}, {"backoff_multiplier": -1},
    {"per_attempt_timeout": 0}, {"retryable_codes": ["CANCELLED"]},
    {"retryable_codes": ["NOPE"]}, {"pushback_codes": [_C.OK]},
])
def test_retry_policy_rejects_bad_values(kwargs: dict[str, object]) -> None:
    """Invalid policies fail at construction, not on the first retry."""
    with pytest.raises((ValueError, TypeError)):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_policy_is_frozen_and_takes_code_names() -> None:
    """Codes may be given by name or number; the policy cannot be changed afterwards."""
    policy = RetryPolicy(retryable_codes=["unavailable", 8])  # type: ignore[arg-type]
    assert policy.retryable_codes == {_C.UNAVAILABLE, _C.RESOURCE_EXHAUSTED}
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 9  # type: ignore[misc]


def test_policies_pick_method_then_service_then_default() -> None:
    """Lookup order: exact method, then the service, then the default; None means no retry."""
    method, service = RetryPolicy(max_attempts=5), RetryPolicy(max_attempts=4)
    policies = RetryPolicies(default=RetryPolicy(max_attempts=2), methods={
        "/pkg.A/Get": method, "pkg.A": service, "pkg.A/Create": None})
    assert policies.policy_for("/pkg.A/Get") is method
    assert policies.policy_for("/pkg.A/List") is service
    assert policies.policy_for("/pkg.A/Create") is None
    assert policies.policy_for("/pkg.B/Get") == RetryPolicy(max_attempts=2)
    with pytest.raises(ValueError):
        RetryPolicies(methods={"a/b/c": None})


# -- server pushback ---------------------------------------------------------------------------


def _retry_info_bin(seconds: float) -> bytes:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    status = status_pb2.Status(code=8, message="x")
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status.SerializeToString()


@pytest.mark.parametrize(("trailers", "expected"), [
    (((PUSHBACK_KEY, "300"),), 0.3),
    (((PUSHBACK_KEY, b"0"),), 0.0),
    (((PUSHBACK_KEY, "-1"),), STOP),
    (((PUSHBACK_KEY, "later"),), STOP),
    (((PUSHBACK_KEY, "1e3"),), STOP),
    (((DETAILS_KEY, _retry_info_bin(1.5)),), 1.5),
    (((DETAILS_KEY, _retry_info_bin(1.5)), (PUSHBACK_KEY, "20")), 0.02),
    (((DETAILS_KEY, b"\xff garbage"),), None),
    ((("other", "1"),), None),
    (None, None),
])
def test_server_delay_reads_pushback_then_retry_info(trailers: object, expected: float) -> None:
    """grpc-retry-pushback-ms wins over RetryInfo; bad pushback stops; garbage is ignored."""
    assert server_delay(trailers) == expected  # type: ignore[arg-type]


# -- server delays -------------------------------------------------------------------------


def _retry_info(seconds: int, nanos: int = 0) -> bytes:
    status = status_pb2.Status(code=8, message="x")
    status.details.add().Pack(error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)))
    return status.SerializeToString()


@pytest.mark.parametrize(("trailers", "expected"), [
    (((DETAILS_KEY, _retry_info(10 * 86_400)),), STOP),  # ten days: do not retry
    (((DETAILS_KEY, _retry_info(-5)),), STOP),  # negative
    (((DETAILS_KEY, _retry_info(86_400)),), MAX_PUSHBACK),  # a day: the longest honoured
    (((DETAILS_KEY, _retry_info(0)),), 0.0),
    (((DETAILS_KEY, _retry_info(1, 500_000_000)),), 1.5),
    (((PUSHBACK_KEY, "86400000"),), MAX_PUSHBACK),
    (((PUSHBACK_KEY, "86400001"),), STOP),
    (((PUSHBACK_KEY, "0000000000000000000000000001"),), 0.001),  # leading zeros: still 1 ms
    (((PUSHBACK_KEY, "9" * 13),), STOP),
    (((PUSHBACK_KEY, " 250 "),), 0.25),
    (((PUSHBACK_KEY, b"\xff"),), STOP),
    (((PUSHBACK_KEY, "١٢"),), STOP),  # non-ASCII digits
    (((DETAILS_KEY, "not bytes"),), None),
    (((DETAILS_KEY, status_pb2.Status(code=8).SerializeToString()),), None),  # no RetryInfo
    ((("x", "1"), ("y", "2"), (PUSHBACK_KEY, "40")), 0.04),  # found after other keys
    ((), None),
    ((("only-one-element",),), None),  # malformed metadata: as if none
])
def test_server_delay_edges(trailers: object, expected: float | None) -> None:
    """Out-of-range or malformed server delays stop retries or are ignored, never obeyed."""
    assert server_delay(trailers) == expected  # type: ignore[arg-type]


def test_full_jitter_uses_the_policy_ceiling_for_each_retry() -> None:
    """Draws are uniform over [0, ceiling(retry)] from the given random source."""
    policy = RetryPolicy(initial_backoff=1, backoff_multiplier=3, max_backoff=100)
    rng, twin = random.Random(5), random.Random(5)
    assert [full_jitter(policy, n, rng) for n in (1, 2, 3)] == [
        twin.uniform(0, 1), twin.uniform(0, 3), twin.uniform(0, 9)]
