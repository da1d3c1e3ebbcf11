"""The gradient limit's rule at its exact edges: parameter bounds and messages, the baseline's
running average and windowed floor, and where growth starts and stops.

Latencies here are binary fractions (0.25 s, 0.375 s, ...), so each expected value is exact.
"""

from __future__ import annotations

import math
import re

import pytest

from octollm_grpc._core.gradient import GradientLimit


def _gradient(**overrides: float) -> GradientLimit:
    settings: dict[str, float] = {"initial_limit": 10, "min_limit": 1, "max_limit": 100}
    settings.update(overrides)
    return GradientLimit(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"min_limit": 0}, "need 1 <= min_limit <= max_limit, not 0, 100"),
    ({"max_limit": math.inf}, "need 1 <= min_limit <= max_limit, not 1, inf"),
    ({"initial_limit": 0.5}, "initial_limit 0.5 is outside [1, 100]"),
    ({"tolerance": math.inf}, "tolerance must be a finite number >= 1, not inf"),
    ({"tolerance": 0.99}, "tolerance must be a finite number >= 1, not 0.99"),
    ({"smoothing": 1.01}, "smoothing must be in (0, 1], not 1.01"),
    ({"window": True}, "window must be a positive int, not True"),
    ({"window": 2.0}, "window must be a positive int, not 2.0"),
    ({"window": 0}, "window must be a positive int, not 0"),
    ({"queue_size": math.inf}, "queue_size must be a finite number >= 0, not inf"),
    ({"queue_size": -0.5}, "queue_size must be a finite number >= 0, not -0.5"),
])
def test_each_refused_parameter_is_named_with_its_value(
    overrides: dict[str, float], message: str,
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        _gradient(**overrides)


@pytest.mark.parametrize("overrides", [
    {"tolerance": 1.0}, {"smoothing": 1.0}, {"window": 1}, {"queue_size": 0.0},
    {"queue_size": 0.5}, {"min_limit": 1, "initial_limit": 1, "max_limit": 1},
])
def test_the_edges_of_each_range_are_accepted(overrides: dict[str, float]) -> None:
    limit = _gradient(**overrides)
    assert limit.limit == limit.initial_limit


def test_the_baseline_is_the_running_average_of_the_samples_within_tolerance() -> None:
    """The first sample is the baseline; each next one within tolerance moves it by
    (sample - baseline) / samples so far, while fewer than ``window`` were averaged."""
    limit = _gradient(window=1000)
    limit.update(0.25, in_flight=10)
    assert limit.baseline == 0.25
    limit.update(0.375, in_flight=10)  # exactly tolerance (1.5) x the baseline: still counted
    assert limit.baseline == 0.3125
    limit.update(0.25, in_flight=10)
    assert limit.baseline == pytest.approx((0.25 + 0.375 + 0.25) / 3)


def test_second_scale_latencies_average_like_any_other() -> None:
    """A baseline of exactly one second is averaged as any other (calls to a model take
    seconds)."""
    limit = _gradient(window=1000)
    limit.update(1.0, in_flight=10)
    limit.update(1.5, in_flight=10)
    assert limit.baseline == 1.25


def test_the_average_weighs_the_last_window_of_samples() -> None:
    """Once ``window`` samples were averaged, each new one weighs 1 / window."""
    limit = _gradient(window=2)
    for rtt in (0.25, 0.375):
        limit.update(rtt, in_flight=10)
    assert limit.baseline == 0.3125
    limit.update(0.4375, in_flight=10)
    assert limit.baseline == 0.3125 + (0.4375 - 0.3125) / 2


def test_the_default_window_lifts_a_slower_server_s_baseline_after_exactly_600_samples() -> None:
    """The floor is the minimum over the current and the previous window (300 samples each by
    default): samples all beyond tolerance leave the baseline alone until the sample that ends
    the second window, which lifts it to their minimum."""
    limit = _gradient()
    limit.update(0.125, in_flight=10)
    for _ in range(598):
        limit.update(0.5, in_flight=10)
    assert limit.baseline == 0.125  # 599 samples: the first window's minimum still counts
    limit.update(0.5, in_flight=10)
    assert limit.baseline == 0.5


def test_a_short_window_rotates_its_floor_every_window_samples() -> None:
    """With window=3 the floor forgets the first window's minimum at the sixth sample."""
    limit = _gradient(window=3)
    limit.update(0.125, in_flight=10)
    for _ in range(4):
        limit.update(0.5, in_flight=10)
    assert limit.baseline == 0.125
    limit.update(0.5, in_flight=10)
    assert limit.baseline == 0.5


def test_latency_exactly_at_tolerance_does_not_grow_an_unused_limit() -> None:
    """A gradient of exactly 1 counts as within tolerance: with few calls in flight the limit
    stays at its resting level instead of growing."""
    limit = _gradient(tolerance=1.0)
    limit.update(0.25, in_flight=1)
    assert limit.update(0.25, in_flight=1) == 10.0


@pytest.mark.parametrize(("in_flight", "expected"), [(4, 10.0), (5, 10.2)])
def test_growth_needs_at_least_half_of_the_limit_in_flight(in_flight: int,
                                                           expected: float) -> None:
    limit = _gradient()
    limit.update(0.25, in_flight=in_flight)
    assert limit.update(0.25, in_flight=in_flight) == pytest.approx(expected)


def test_a_grown_limit_is_kept_through_a_quiet_spell() -> None:
    """Grown above its resting level under load, the limit neither grows nor falls back while
    few calls are in flight and latency stays within tolerance."""
    limit = _gradient()
    for _ in range(10):
        limit.update(0.25, in_flight=10)
    grown = limit.limit
    assert grown == pytest.approx(12.0)
    for _ in range(5):
        assert limit.update(0.25, in_flight=1) == grown
