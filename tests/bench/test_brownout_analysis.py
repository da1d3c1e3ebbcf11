"""The brownout's figures computed from known call records."""

from __future__ import annotations

import math

import pytest

from benchmarks import brownout

CONFIG = brownout.BrownoutConfig(rate=10.0, before_s=1.0, trigger_s=1.0, after_s=2.0,
                                 bin_s=0.5, slots=4, service_s=0.02)


def _record(calls: list[tuple[float, float, str]]) -> dict[str, object]:
    return {"calls": calls, "t0": 0.0, "max_lag_s": 0.0}


def test_goodput_counts_successes_ending_in_the_window_against_the_reduced_capacity() -> None:
    """50 successes ending inside the 1 s window, capacity halved to 100/s: ratio 0.5."""
    calls = [(1.0 + i / 50, 1.0 + i / 50 + 0.01, "OK") for i in range(50)]
    figures = brownout.analyse_brownout(_record(calls), CONFIG, unloaded_p99_ms=10.0)
    assert figures["goodput_per_s"] == pytest.approx(50.0)
    assert figures["goodput_ratio"] == pytest.approx(0.5)


def test_p99_counts_admitted_calls_only_and_timeouts_at_their_deadline() -> None:
    """Refused calls (instant) are left out of the p99; a timed-out admitted call is in."""
    calls = [(1.0 + i / 100, 1.0 + i / 100 + 0.02, "OK") for i in range(90)]
    calls += [(1.5, 1.5, "RESOURCE_EXHAUSTED")] * 100
    calls += [(1.9, 2.4, "DEADLINE_EXCEEDED")] * 10
    figures = brownout.analyse_brownout(_record(calls), CONFIG, unloaded_p99_ms=20.0)
    assert figures["admitted_p99_ms"] == pytest.approx(500.0)
    assert figures["p99_ratio"] == pytest.approx(25.0)
    assert figures["refused_share"] == pytest.approx(0.5)


def test_recovery_is_the_first_bin_after_which_every_bin_succeeds() -> None:
    """Refusals until 2.5 s (the window ended at 2 s): recovery 0.5 s."""
    starts = [i / 10 for i in range(40)]
    calls = [(s, s + 0.01, "RESOURCE_EXHAUSTED" if 1.0 <= s < 2.5 else "OK") for s in starts]
    figures = brownout.analyse_brownout(_record(calls), CONFIG, unloaded_p99_ms=10.0)
    assert figures["recovered"] is True
    assert math.isclose(figures["recovery_s"], 0.5)


def test_light_load_counts_refusals() -> None:
    """Every RESOURCE_EXHAUSTED of the light load is a refusal."""
    calls = [(i / 10, i / 10 + 0.02, "OK") for i in range(9)] + [(1.0, 1.0, "RESOURCE_EXHAUSTED")]
    figures = brownout.analyse_light(_record(calls))
    assert figures["refusals"] == 1 and figures["calls"] == 10
    assert figures["p50_ms"] == pytest.approx(20.0)


def test_the_model_backs_the_documented_comparison_of_baselines() -> None:
    """In the brownout model, ours keeps admitted p99 under 3x the unloaded p99 where
    Gradient2 as published does not, with the same goodput and no refusal at half capacity."""
    from benchmarks import brownout_model as model
    from octollm_grpc._core.gradient import GradientLimit

    bounds = {"initial_limit": 8, "min_limit": 1, "max_limit": 64}
    ours = model.simulate(lambda: GradientLimit(**bounds))
    theirs = model.simulate(lambda: model.Gradient2(**bounds))
    assert ours["p99_ratio"] < 3.0 < theirs["p99_ratio"]
    assert ours["goodput_ratio"] >= 0.9 and theirs["goodput_ratio"] >= 0.9
    assert model.simulate(lambda: GradientLimit(**bounds), rate=100.0,
                          brownout=False)["refusals"] == 0
