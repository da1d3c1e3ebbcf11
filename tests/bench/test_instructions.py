"""The instruction counts: callgrind on a real server, dumps read exactly, ratios the right way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import instructions

needs_valgrind = pytest.mark.skipif(
    not instructions.available(), reason="valgrind missing: `make valgrind` installs it")


@needs_valgrind
def test_server_counts_come_from_the_dump_and_its_self_costs_add_up(tmp_path: Path) -> None:
    """Under callgrind a path's count is its dump's totals (self costs summing to it exactly)."""
    counts = instructions.count_server("bare", "sync", tmp_path, n=10, warmup=5,
                                       paths=("success", "error"))
    for kind, count in counts.items():
        totals = re.search(r"^totals:\s+(\d+)", count.dump.read_text(), re.MULTILINE)
        assert totals is not None and int(totals.group(1)) == count.total, kind
        assert sum(instructions.self_costs(count.dump).values()) == count.total, kind
        assert 0 <= count.spin < count.total, kind
        assert count.per_call == (count.total - count.spin) / 10
        assert 100_000 < count.per_call < 5_000_000, (kind, count.per_call)
    assert counts["success"].dump != counts["error"].dump


def test_the_spin_wait_is_found_once_in_the_installed_grpc_core() -> None:
    """absl::Mutex's spin loop is located in grpc's core: one short range of instructions."""
    loop = instructions.spin_loop()
    assert loop is not None
    assert 0 < loop[1] - loop[0] < 32


def test_headline_ratios_are_bare_or_peer_over_ours() -> None:
    """Each ratio divides the reference's count by ours, so above 1 ours is cheaper."""
    counts = {
        "server": {
            "bare": {"success": 400.0, "error": 390.0, "reject": 380.0},
            "ours": {"success": 500.0, "error": 700.0, "reject": 600.0},
            "peer_full": {"success": 480.0, "error": 840.0, "reject": 450.0},
        },
        "client": {"bare": 270.0, "client": 300.0},
    }
    ratios = instructions.headlines(counts)
    assert ratios["server_success_ir_ratio"] == pytest.approx(0.8)
    assert ratios["server_error_ir_ratio"] == pytest.approx(390 / 700)
    assert ratios["server_error_vs_peer_ir_ratio"] == pytest.approx(1.2)
    assert ratios["server_rejection_ir_ratio"] == pytest.approx(380 / 600)
    assert ratios["client_success_ir_ratio"] == pytest.approx(0.9)


def test_run_difference_is_the_largest_relative_gap_of_any_count() -> None:
    """Two runs differing by 1% on one server count and 3% on one client count: 3%."""
    first = {"sync": {"server": {"bare": {"success": 100.0}}, "client": {"bare": 200.0}}}
    second = {"sync": {"server": {"bare": {"success": 101.0}}, "client": {"bare": 206.0}}}
    assert instructions.max_relative_difference(first, second) == pytest.approx(0.03)


def test_valgrind_is_what_make_bench_installs() -> None:
    """`make bench` depends on the target that installs valgrind."""
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert re.search(r"^bench: .*\bvalgrind\b", makefile, re.MULTILINE)
    assert "apt-get install -y -qq valgrind" in makefile
