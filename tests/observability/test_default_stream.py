"""Until the program configures structlog, the library's events go to stderr, not stdout."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent("""
    import asyncio
    from octollm_grpc import errors
    from octollm_grpc.resilience import CircuitBreaker

    def fail():
        raise errors.LLMAPIError("p")

    cb = CircuitBreaker(failure_threshold=1, timeout=5, name="stream-check")
    try:
        cb.call_sync(fail)
    except errors.LLMAPIError:
        pass
    print("program output")
""")

CONFIGURED = "import structlog; structlog.configure()\n" + PROGRAM


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)


def test_unconfigured_events_go_to_stderr() -> None:
    """The breaker's state change is on stderr; stdout holds only the program's own line."""
    done = _run(PROGRAM)
    assert done.stdout == "program output\n"
    assert "circuit_breaker_state_changed" in done.stderr


def test_configured_structlog_decides_where_events_go() -> None:
    """Once the program configures structlog, its configuration (stdout by default) wins."""
    done = _run(CONFIGURED)
    assert "circuit_breaker_state_changed" in done.stdout
    assert "circuit_breaker_state_changed" not in done.stderr
