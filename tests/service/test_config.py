"""The service's command line: every flag documented, env defaults, bad values refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.config import parse_args
from tests.service.harness import ROOT

FLAGS = ["--host", "--port", "--db", "--grace", "--metrics-port", "--rate-limit",
         "--rate-window", "--burst", "--auth-token", "--dev", "--log-level", "--arm-target",
         "--arm-port", "--arm-failure-rate", "--arm-latency-ms", "--arm-down", "--arm-seed",
         "--arm-timeout", "--arm-attempts", "--arm-breaker-failures", "--arm-breaker-reset"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_help_lists_every_flag() -> None:
    """`python -m server --help` exits 0 and documents every flag the parser accepts."""
    done = _run("--help")
    assert done.returncode == 0
    for flag in FLAGS:
        assert f"  {flag}" in done.stdout, flag
    accepted = {a for a in done.stdout.split() if a.startswith("--") and a != "--help"}
    assert {a.rstrip(",") for a in accepted} >= set(FLAGS)


def test_defaults_and_port_from_env() -> None:
    """Defaults: 127.0.0.1:50051, metrics 9464, 100 calls/s per caller, no auth; PORT sets port."""
    settings = parse_args([], env={})
    assert (settings.host, settings.port, settings.metrics_port) == ("127.0.0.1", 50051, 9464)
    assert (settings.rate_limit, settings.rate_window, settings.burst) == (100, 1, None)
    assert (settings.auth_token, settings.arm_target) == (None, None)
    assert parse_args([], env={"PORT": "6100"}).port == 6100
    assert parse_args(["--port", "7000"], env={"PORT": "6100"}).port == 7000
    assert parse_args([], env={"OCTOLLM_AUTH_TOKEN": "t"}).auth_token == "t"


@pytest.mark.parametrize("argv", [
    ["--port", "70000"], ["--arm-failure-rate", "1.5"], ["--arm-attempts", "0"],
    ["--rate-limit", "-1"], ["--arm-breaker-reset", "0"], ["--burst", "0"],
    ["--arm-latency-ms", "-1"], ["--metrics-port", "-2"],
])
def test_bad_values_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """An out-of-range flag stops with argparse's usage error (exit 2), naming the flag."""
    with pytest.raises(SystemExit) as raised:
        parse_args(argv, env={})
    assert raised.value.code == 2
    error_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert argv[0] in error_line


def test_unusable_database_fails_start_with_database_error(tmp_path: Path) -> None:
    """A --db SQLite cannot open: exit 1 with the DatabaseError message, nothing served."""
    done = _run("--port", "0", "--metrics-port", "-1", "--db", str(tmp_path))
    assert done.returncode == 1
    assert "Database open failed: unable to open database file" in done.stderr
    assert "listening" not in done.stdout


def test_grpc_core_prints_only_its_errors_unless_the_operator_chose() -> None:
    """The service's stderr is JSON lines: grpc core's INFO lines ("Got goaway") are off by
    default, and an operator's GRPC_VERBOSITY is kept."""
    from server.__main__ import quiet_grpc_core

    unset: dict[str, str] = {}
    quiet_grpc_core(unset)
    chosen = {"GRPC_VERBOSITY": "INFO"}
    quiet_grpc_core(chosen)
    assert (unset, chosen) == ({"GRPC_VERBOSITY": "ERROR"}, {"GRPC_VERBOSITY": "INFO"})
