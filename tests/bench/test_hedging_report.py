"""The hedging benchmark's figures: headline keys, targets and the table, from known results."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from benchmarks import hedging


def _phase(p99: float, amplification: float) -> dict[str, Any]:
    return {"calls": 100, "failures": 0, "server_attempts": int(100 * amplification),
            "server_cancelled": 0, "server_stalled": 5, "extra_attempts": amplification - 1,
            "amplification": amplification, "p50_ms": 2.0, "p95_ms": 4.0, "p99_ms": p99,
            "p999_ms": p99, "max_ms": p99}


def _stack(plain_p99: float, hedged_p99: float) -> dict[str, Any]:
    return {"hedging_delay_ms": 4.0, "calibration": _phase(5.0, 1.0),
            "plain": _phase(plain_p99, 1.0), "hedged": _phase(hedged_p99, 1.08),
            "hedged_burst_budget": _phase(hedged_p99 / 2, 1.09),
            "outage_retry": _phase(3.0, 1.02), "outage_hedged": _phase(3.0, 1.01),
            "outage_hedged_no_budget": _phase(9.0, 3.0), "p99_reduction": plain_p99 / hedged_p99}


RESULT = {"config": asdict(hedging.HedgingBenchConfig()),
          "run": {"generated_at": "2026-12-06T00:00:00+00:00", "commit": "abc1234",
                  "load_average_at_start": [1.0, 1.0, 1.0], "load_average_at_end": [2.0, 1, 1]},
          "sync": _stack(104.0, 10.4), "aio": _stack(104.0, 52.0)}


def test_headlines_are_per_stack_figures() -> None:
    """Each stack's p99 reduction, extra attempts and both outage amplifications."""
    keys = hedging.headlines(RESULT)
    assert keys["hedging_p99_reduction_sync"] == 10.0
    assert keys["hedging_p99_reduction_aio"] == 2.0
    assert keys["hedging_extra_attempts_aio"] == 1.08 - 1
    assert keys["hedging_outage_amplification_sync"] == 1.01
    assert keys["retry_outage_amplification_sync"] == 1.02


def test_targets_say_which_bounds_hold() -> None:
    """p99 reduction >= 3, extra attempts <= 10 %, hedging outage amplification <= retries'."""
    document = {"hedging": RESULT, **hedging.headlines(RESULT)}
    rows = {name: (value, bound, at_least) for name, value, bound, at_least
            in hedging.target_rows(document)}
    assert rows["sync hedging p99 reduction"] == (10.0, 3.0, True)
    assert rows["aio hedging p99 reduction"] == (2.0, 3.0, True)
    value, bound, at_least = rows["sync outage amplification, hedging - retries"]
    assert (round(value, 6), bound, at_least) == (-0.01, 0.0, False)


def test_markdown_has_every_phase_and_the_run_conditions() -> None:
    """The table lists each phase per stack and says when and how busy the run was."""
    lines = "\n".join(hedging.markdown_lines({"hedging": RESULT}))
    assert "commit `abc1234`, load average at start 1.00/1.00/1.00" in lines
    for stack in ("sync", "aio"):
        for phase in ("calibration", "plain", "hedged", "hedged_burst_budget", "outage_retry",
                      "outage_hedged", "outage_hedged_no_budget"):
            assert f"| {stack} | {phase} |" in lines
    assert "| sync | 4.00 | 10.00x | 8.0% | 20.00x | 1.010 / 1.020 |" in lines
    assert hedging.markdown_lines({}) == []
