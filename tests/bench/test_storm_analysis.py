"""The storm's figures computed from known call and attempt records."""

from __future__ import annotations

import math

from benchmarks import stats, storm
from benchmarks.config import StormConfig

CONFIG = StormConfig(rate=10.0, before_s=1.0, trigger_s=1.0, after_s=2.0, bin_s=0.5,
                     max_attempts=4)


def _record(calls: list[tuple[float, float, bool]]) -> dict[str, object]:
    return {"calls": calls, "t0": 0.0, "trigger_start": 1.0, "trigger_end": 2.0, "end": 4.0,
            "max_lag_s": 0.0, "failures": {}}


def test_amplification_counts_attempts_of_calls_started_in_the_trigger() -> None:
    """Four attempts for each trigger call and one for the others give amplification 4."""
    starts = [i / 10 for i in range(40)]
    calls = [(s, s + 0.01, not 1.0 <= s < 2.0) for s in starts]
    attempts = [(s + k * 0.05, s) for s in starts for k in range(4 if 1.0 <= s < 2.0 else 1)]
    figures = storm.analyse(_record(calls), attempts, CONFIG)
    assert figures["calls_in_trigger"] == 10
    assert figures["amplification"] == 4.0
    assert figures["share_at_max_attempts"] == 1.0
    assert figures["amplification_overall"] == len(attempts) / 40
    assert figures["success_share"] == {"before": 1.0, "trigger": 0.0, "after": 1.0}


def test_recovery_is_the_first_bin_from_which_every_later_bin_succeeds() -> None:
    """A good bin followed by a bad one does not count: recovery starts after the last bad bin."""
    starts = [i / 10 for i in range(40)]
    # Failing until 2.5 s, then one failure at 3.2 s: the 3.0-3.5 s bin (4 of 5) is below
    # 95 %, so recovery is at 3.5 s, 1.5 s after the trigger ended.
    calls = [(s, s + 0.01, not (1.0 <= s < 2.5 or math.isclose(s, 3.2))) for s in starts]
    figures = storm.analyse(_record(calls), [(s, s) for s in starts], CONFIG)
    assert figures["recovered"] is True
    assert math.isclose(figures["recovery_s"], 1.5)
    assert figures["amplification"] == 1.0


def test_never_recovering_reports_the_whole_after_phase() -> None:
    """A last bin that still fails means not recovered, and recovery_s = after_s."""
    starts = [i / 10 for i in range(40)]
    calls = [(s, s + 0.01, s < 1.0) for s in starts]
    figures = storm.analyse(_record(calls), [(s, s) for s in starts], CONFIG)
    assert figures["recovered"] is False
    assert figures["recovery_s"] == 2.0


def test_percentile_and_summary_of_known_values() -> None:
    """Percentiles interpolate linearly; the summary gives median, extremes and spread."""
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 50) == 50.5
    assert math.isclose(stats.percentile(values, 99), 99.01)
    assert math.isnan(stats.percentile([], 50))
    assert stats.summary([1.0, 2.0, 4.0]) == {
        "median": 2.0, "min": 1.0, "max": 4.0, "spread": 1.5, "n": 3}
