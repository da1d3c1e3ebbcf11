"""Cheap load shedding: refusals counted per call, logged per caller and interval, status reused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import grpc
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.observability._logs import FAILED_EVENT, RATE_LIMITED_EVENT
from octollm_grpc.server import (
    CallLogger,
    RateLimit,
    RateLimiter,
    ServerMetrics,
    server_interceptors,
)
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server._shedding import (
    Rejection,
    RejectionLog,
    RejectionStatuses,
    advertised_wait,
)
from octollm_grpc.status import from_rpc_error, to_status
from octollm_grpc.testing import FakeClock
from tests.server.harness import Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server

CALLS = 30


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def _limiter() -> RateLimiter:
    # One call per hour per caller: every call after the first is refused.
    return RateLimiter(RateLimit(limit=1, window=3600))


def _check_refusals(outcomes: list[Any], registry: CollectorRegistry,
                    logs: list[dict[str, Any]]) -> None:
    refused = [o for o in outcomes if o.error is not None]
    assert len(refused) == CALLS - 1
    for index, outcome in enumerate(refused):
        error = from_rpc_error(outcome.error)
        assert isinstance(error, e.RateLimitError)
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # The status is shared, the request id is the call's own.
        assert error.request_id == f"rid-{index + 1}"
        assert error.details == {"limit": 1, "window": 3600}
        assert error.retry_after is not None and 3500 < error.retry_after <= 3600
        assert int(outcome.trailers["grpc-retry-pushback-ms"]) > 3_500_000
    assert registry.get_sample_value("grpc_server_handled_total", {
        "grpc_type": "unary", "grpc_service": "test.Shapes", "grpc_method": "Unary",
        "grpc_code": "ResourceExhausted"}) == CALLS - 1
    assert registry.get_sample_value("octollm_errors_total", {
        "error_type": "RATE_LIMIT_EXCEEDED", "component": "grpc_server"}) == CALLS - 1
    # Logged in aggregate: the first refusal at once, none of the others one by one.
    assert _events(logs, FAILED_EVENT) == []
    shed = _events(logs, RATE_LIMITED_EVENT)
    assert len(shed) == 1
    assert shed[0]["count"] == 1
    assert shed[0]["grpc_method"] == "/test.Shapes/Unary"
    assert shed[0]["caller"] == "ipv4:127.0.0.1"
    assert shed[0]["request_id"] == "rid-1"
    assert shed[0]["log_level"] == "warning"


def test_sync_refusals_are_counted_each_and_logged_once() -> None:
    """Sync: 29 refusals give 29 in the metrics, the same status with each call's request id,
    and one log event (the first refusal), not 29."""
    registry = CollectorRegistry()
    stack = server_interceptors(metrics=ServerMetrics(registry), rate_limit=_limiter())
    with capture_logs() as logs, sync_server(sync_handlers(Script()), stack) as target:
        outcomes = [call_sync(target, "unary", [("x-request-id", f"rid-{i}")])
                    for i in range(CALLS)]
    assert outcomes[0].error is None
    _check_refusals(outcomes, registry, logs)


async def test_aio_refusals_are_counted_each_and_logged_once() -> None:
    """aio: the same."""
    registry = CollectorRegistry()
    stack = server_aio.server_interceptors(metrics=ServerMetrics(registry),
                                           rate_limit=_limiter())
    with capture_logs() as logs:
        async with aio_server(aio_handlers(Script()), stack) as target:
            outcomes = [await call_aio(target, "unary", [("x-request-id", f"rid-{i}")])
                        for i in range(CALLS)]
    assert outcomes[0].error is None
    _check_refusals(outcomes, registry, logs)


def test_counts_are_logged_once_per_interval_and_none_is_lost() -> None:
    """One event per caller per interval with the count; flushing writes what is pending;
    the counts add up to the refusals."""
    clock = FakeClock()
    log = RejectionLog(CallLogger(), interval=1.0, clock=clock.now)
    with capture_logs() as logs:
        for _ in range(51):  # t = 0: the first is logged, 50 wait
            log.note("/s/M", "ipv4:10.0.0.1", "r")
        clock.advance(0.5)
        log.note("/s/M", "ipv4:10.0.0.1", "r")  # same interval: still waiting
        assert [entry["count"] for entry in logs] == [1]
        clock.advance(0.5)
        log.note("/s/M", "ipv4:10.0.0.1", "r")  # interval over: its 51 are logged
        assert [entry["count"] for entry in logs] == [1, 51]
        for _ in range(9):
            log.note("/s/M", "ipv4:10.0.0.1", "r")
        clock.advance(1.0)
        log.note("/s/M", "ipv4:10.0.0.2", "r")  # another caller's refusal sweeps the first's
        log.flush()
    counts = [(entry["caller"], entry["count"]) for entry in logs]
    assert counts == [("ipv4:10.0.0.1", 1), ("ipv4:10.0.0.1", 51), ("ipv4:10.0.0.1", 10),
                      ("ipv4:10.0.0.2", 1)]
    assert sum(count for _, count in counts) == 51 + 1 + 1 + 9 + 1
    assert {entry["interval_s"] for entry in logs} == {1.0}


def test_metadata_keys_are_logged_as_a_digest_and_the_oldest_callers_are_written_out() -> None:
    """A key from request metadata (an API key) never reaches the log in clear; past
    max_keys the oldest caller's pending count is written out, not dropped."""
    clock = FakeClock()
    log = RejectionLog(CallLogger(), secret_keys=True, clock=clock.now, max_keys=2)
    with capture_logs() as logs:
        log.note("/s/M", "sk-secret-1", None)
        log.note("/s/M", "sk-secret-1", None)
        log.note("/s/M", "sk-secret-2", None)
        log.note("/s/M", "sk-secret-3", None)  # evicts sk-secret-1 and its pending 1
    assert "sk-secret" not in repr(logs)
    assert [entry["count"] for entry in logs] == [1, 1, 1, 1]
    assert len({entry["caller"] for entry in logs}) == 3
    assert all(len(entry["caller"]) == 16 for entry in logs)


def test_limiter_keyed_by_metadata_logs_digests_on_a_real_server() -> None:
    """The stack tells the log its keys are secret when the limiter reads them from metadata."""
    limiter = RateLimiter(RateLimit(limit=1, window=3600), key_metadata="x-api-key")
    stack = server_interceptors(metrics=False, rate_limit=limiter)
    with capture_logs() as logs, sync_server(sync_handlers(Script()), stack) as target:
        for _ in range(3):
            call_sync(target, "unary", [("x-api-key", "sk-live-abcdef")])
    shed = _events(logs, RATE_LIMITED_EVENT)
    assert len(shed) == 1 and "sk-live" not in repr(logs)


def test_one_status_per_limit_and_wait_with_the_calls_request_id() -> None:
    """The cached status decodes to what to_status gives for the same error and request id."""
    statuses = RejectionStatuses()
    limit = RateLimit(limit=5, window=60)
    first = statuses.status(Rejection(limit, "k", 2.5), "rid-a")
    second = statuses.status(Rejection(limit, "k", 2.5), "rid-b")
    for status, rid in ((first, "rid-a"), (second, "rid-b")):
        expected = to_status(e.RateLimitError(limit=5, window=60, retry_after=2.5),
                             request_id=rid)
        assert status.code is expected.code and status.details == expected.details
        assert dict(status.trailing_metadata)["grpc-retry-pushback-ms"] == "2500"
        # Byte for byte what to_status gives (the retry advice is the same whole ms here).
        assert status.trailing_metadata == expected.trailing_metadata
    assert len(statuses._cache) == 1  # built once for both calls


def test_pending_counts_are_written_at_exit() -> None:
    """A process that exits with refusals not yet logged writes their count on the way out."""
    script = textwrap.dedent("""
        import sys
        from octollm_grpc.server import CallLogger, configure_logging
        from octollm_grpc.server._shedding import RejectionLog
        configure_logging(json=True, stream=sys.stdout, background=False)
        log = RejectionLog(CallLogger())
        for _ in range(7):
            log.note("/s/M", "ipv4:10.0.0.9", None)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    lines = [line for line in done.stdout.splitlines() if RATE_LIMITED_EVENT in line]
    assert len(lines) == 2, done.stdout + done.stderr
    assert [json.loads(line)["count"] for line in lines] == [1, 6]


@given(st.floats(min_value=1e-6, max_value=400_000.0, allow_nan=False))
def test_advertised_wait_is_never_early_and_at_most_one_percent_late(wait: float) -> None:
    """Refused callers never retry before a token is due, and wait at most 1 % (or 1 ms) more."""
    told = advertised_wait(wait)
    assert told >= wait - 1e-9
    assert told <= max(wait * 1.01, wait + 0.001) + 1e-9


def test_refusals_of_one_limit_share_a_few_statuses() -> None:
    """A long wait counting down by a millisecond per refusal reuses its status: one status
    per 10 s of a one-hour wait, not one per millisecond."""
    statuses = RejectionStatuses()
    limit = RateLimit(limit=1, window=3600)
    for ms in range(3_599_999, 3_590_000, -1):  # 10,000 refusals over 10 s of waiting
        statuses.status(Rejection(limit, "k", ms / 1000.0), "rid")
    assert len(statuses._cache) == 1
