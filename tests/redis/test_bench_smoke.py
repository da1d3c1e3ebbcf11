"""The Redis rate-limit benchmark runs end to end (a few iterations, no figures asserted)."""

from __future__ import annotations

import pytest

from benchmarks import ratelimit_redis


def test_benchmark_prints_both_stacks(capsys: pytest.CaptureFixture[str]) -> None:
    """`make bench-redis` in miniature: a table row per stack and measure."""
    ratelimit_redis.main(["-n", "30"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| sync", "| aio"))]
    assert len(rows) == 4, out
    assert all(line.count("µs") >= 4 for line in rows), out
