"""Backoff and server delays without a network: full-jitter draws, ceilings, pushback
and RetryInfo parsing, policies per method."""

from __future__ import annotations

import dataclasses
import random

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc._core.backoff import (
    MAX_PUSHBACK,
    STOP,
    Exponential,
    full_jitter,
    server_delay,
)
from octollm_grpc.client import (
    RetryPolicies,
    RetryPolicy,
)
from octollm_grpc.status._limits import DETAILS_KEY, PUSHBACK_KEY

_C = grpc.StatusCode


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


# -- the Exponential formula of the resilience decorators ---------------------------------------

_FIELDS = ("initial_backoff", "max_backoff", "backoff_multiplier")


def _exponential(field: str, value: object) -> Exponential:
    settings: dict[str, object] = {"initial_backoff": 1.0, "max_backoff": 8.0,
                                   "backoff_multiplier": 2.0, field: value}
    return Exponential(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", _FIELDS)
@pytest.mark.parametrize("value", [True, "1", None])
def test_exponential_rejects_a_non_number_naming_the_field(field: str, value: object) -> None:
    """A bool, a string or None is a TypeError whose message names the field and the value."""
    with pytest.raises(TypeError) as raised:
        _exponential(field, value)
    assert str(raised.value) == f"{field} must be a number, not {value!r}"


@pytest.mark.parametrize("field", _FIELDS)
@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, float("nan"), float("inf"), float("-inf")])
def test_exponential_rejects_a_non_positive_or_infinite_value(field: str, value: float) -> None:
    """Zero, negatives, NaN and infinities are a ValueError naming the field and the value."""
    with pytest.raises(ValueError) as raised:
        _exponential(field, value)
    assert str(raised.value) == f"{field} must be a finite number > 0, not {value!r}"


def test_exponential_accepts_positive_ints_and_floats_and_is_frozen() -> None:
    """Any finite number > 0 is taken as given (ints too); the settings cannot change later."""
    backoff = Exponential(initial_backoff=1, max_backoff=3, backoff_multiplier=1e-3)
    settings = (backoff.initial_backoff, backoff.max_backoff, backoff.backoff_multiplier)
    assert settings == (1, 3, 1e-3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        backoff.max_backoff = 2.0  # type: ignore[misc]


def test_exponential_ceilings_grow_by_the_multiplier_up_to_the_maximum() -> None:
    """Ceiling n is exactly initial * multiplier ** (n-1) until it reaches max_backoff."""
    backoff = Exponential(initial_backoff=0.5, max_backoff=5.0, backoff_multiplier=2.0)
    assert [backoff.backoff_ceiling(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert backoff.backoff_ceiling(10**9) == 5.0
    # Exactly at the maximum: the formula's value, which is the maximum.
    assert Exponential(1.0, 8.0, 2.0).backoff_ceiling(4) == 8.0


def test_exponential_below_one_multiplier_shrinks_and_never_caps() -> None:
    """A multiplier < 1 shrinks the ceiling each retry (never past zero, never an error)."""
    backoff = Exponential(initial_backoff=4.0, max_backoff=10.0, backoff_multiplier=0.5)
    assert [backoff.backoff_ceiling(n) for n in (1, 2, 3)] == [4.0, 2.0, 1.0]
    assert backoff.backoff_ceiling(10**6) == 0.0


def test_exponential_ceiling_past_the_cap_is_the_cap_even_where_the_power_overflows() -> None:
    """A ceiling whose power would overflow a float (1e200 ** 2) is max_backoff, not an error."""
    backoff = Exponential(initial_backoff=1.0, max_backoff=1e300, backoff_multiplier=1e200)
    assert backoff.backoff_ceiling(2) == 1e200
    assert backoff.backoff_ceiling(3) == 1e300


def test_exponential_ceiling_is_the_exact_formula_one_ulp_below_the_maximum() -> None:
    """Where the log-space shortcut ties, the ceiling is still initial * multiplier ** (n-1)."""
    # 0.5 * 2.5 ** 7 == 305.17578125 exactly; the maximum is the next float above it.
    backoff = Exponential(initial_backoff=0.5, max_backoff=305.17578125000006,
                          backoff_multiplier=2.5)
    assert backoff.backoff_ceiling(8) == 305.17578125



def test_exponential_with_a_tiny_initial_caps_instead_of_overflowing() -> None:
    """Where maximum / initial is past a float, a huge retry number still caps at the maximum."""
    backoff = Exponential(initial_backoff=1e-300, max_backoff=1e300, backoff_multiplier=10.0)
    assert backoff.backoff_ceiling(1000) == 1e300
    assert backoff.backoff_ceiling(10**9) == 1e300
    policy = RetryPolicy(initial_backoff=1e-300, max_backoff=1e10, backoff_multiplier=10,
                         max_attempts=1000)
    assert policy.backoff_ceiling(999) == 1e10


def test_exponential_below_the_cap_where_the_power_alone_overflows() -> None:
    """10.0 ** 309 is past a float, yet 1e-300 * 10 ** 309 = 1e9 is below the cap: that is it."""
    backoff = Exponential(initial_backoff=1e-300, max_backoff=1e10, backoff_multiplier=10.0)
    assert backoff.backoff_ceiling(310) == pytest.approx(1e9, rel=1e-9)
    assert backoff.backoff_ceiling(311) == pytest.approx(1e10, rel=1e-9)
    assert backoff.backoff_ceiling(312) == 1e10
    # An int multiplier overflows converting the int power to float: the same answer.
    as_int = Exponential(initial_backoff=1e-300, max_backoff=1e10, backoff_multiplier=10)
    assert as_int.backoff_ceiling(310) == pytest.approx(1e9, rel=1e-9)

class _RecordingRandom(random.Random):
    """A random source that answers a fixed fraction of each range and records the ranges."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return a + (b - a) * self.fraction


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
def test_full_jitter_draws_once_from_zero_to_the_exponential_ceiling(fraction: float) -> None:
    """Each delay is one draw from the injected source over [0, ceiling(n)]; its ends included."""
    backoff = Exponential(initial_backoff=0.5, max_backoff=3.0, backoff_multiplier=2.0)
    rng = _RecordingRandom(fraction)
    delays = [full_jitter(backoff, n, rng) for n in (1, 2, 3, 4)]
    assert rng.ranges == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]
    assert delays == [fraction * ceiling for ceiling in (0.5, 1.0, 2.0, 3.0)]
