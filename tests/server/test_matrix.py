"""The error matrix: sync and aio x four RPC shapes x representative errors.

For each cell the client sees the mapped code and decodable details with the request id, never
an unexpected exception's text; the log has exactly one event at the right level; the metrics
count the call once.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.observability._logs import FAILED_EVENT
from octollm_grpc.observability._server_metrics import go_code_name
from octollm_grpc.server import (
    BearerAuth,
    RateLimit,
    RateLimiter,
    ServerMetrics,
    StaticTokens,
    current_request_id,
    server_interceptors,
)
from octollm_grpc.server import aio as server_aio
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._limits import GENERIC_MESSAGE, PUSHBACK_KEY, TIMEOUT_MESSAGE
from octollm_grpc.testing import FakeClock
from tests.server.harness import (
    METHODS,
    SERVICE,
    SHAPES,
    Outcome,
    Script,
    aio_handlers,
    call_aio,
    call_sync,
    path,
    sync_handlers,
)
from tests.servers import aio_server, sync_server

RID = "req-matrix-0001"
SECRET = "secret"


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], BaseException]
    code: grpc.StatusCode
    error_code: str
    cls: type[e.OctoLLMError]
    level: str


CASES = [
    Case("task_not_found", lambda: e.TaskNotFoundError("task-7"),
         grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND", e.TaskNotFoundError, "warning"),
    Case("validation_errors", lambda: e.ValidationErrors([
        {"field": "description", "message": "description must not be blank"},
        {"field": "priority", "message": "priority must be between 1 and 10"},
    ]), grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERRORS", e.ValidationErrors, "warning"),
    Case("rate_limit", lambda: e.RateLimitError(limit=10, window=60, retry_after=30),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED", e.RateLimitError, "warning"),
    Case("database", lambda: e.DatabaseError("query", ConnectionError("db unreachable")),
         grpc.StatusCode.INTERNAL, "DATABASE_ERROR", e.DatabaseError, "error"),
    Case("builtin_timeout", lambda: builtins.TimeoutError(f"{SECRET}: upstream 10.0.0.5 hung"),
         grpc.StatusCode.DEADLINE_EXCEEDED, "TIMEOUT_ERROR", e.TimeoutError, "error"),
    Case("unexpected", lambda: RuntimeError(f"{SECRET} password=hunter2"),
         grpc.StatusCode.INTERNAL, "INTERNAL_ERROR", e.InternalError, "critical"),
]


def _labels(shape: str, **extra: str) -> dict[str, str]:
    return {"grpc_type": shape, "grpc_service": SERVICE, "grpc_method": METHODS[shape], **extra}


def _check(case: Case, shape: str, outcome: Outcome, logs: list[dict[str, Any]],
           registry: CollectorRegistry) -> None:
    err = outcome.error
    assert err is not None
    assert outcome.messages == []
    assert err.code() == case.code  # type: ignore[attr-defined]

    decoded = from_rpc_error(err)
    assert type(decoded) is case.cls
    assert decoded.error_code == case.error_code
    assert decoded.request_id == RID
    assert outcome.trailers["x-request-id"] == RID
    original = case.make()
    if isinstance(original, e.OctoLLMError):
        assert decoded == original
    else:
        expected = TIMEOUT_MESSAGE if case.code is grpc.StatusCode.DEADLINE_EXCEEDED else (
            GENERIC_MESSAGE)
        assert decoded.message == expected
        wire = repr((err.details(), outcome.trailers,  # type: ignore[attr-defined]
                     err.debug_error_string()))  # type: ignore[attr-defined]
        assert SECRET not in wire
        assert "hunter2" not in wire
    if case.name == "rate_limit":
        assert decoded.retry_after == 30
        assert outcome.trailers[PUSHBACK_KEY] == "30000"
    if case.name == "validation_errors":
        assert [v["field"] for v in decoded.errors] == ["description", "priority"]

    assert len(logs) == 1, logs
    event = logs[0]
    assert event["event"] == FAILED_EVENT
    assert event["log_level"] == case.level
    assert event["grpc_method"] == path(shape)
    assert event["grpc_code"] == case.code.name
    assert event["error_code"] == case.error_code
    assert event["request_id"] == RID
    assert event["peer"].startswith("ipv")
    assert event["duration_ms"] >= 0
    if case.level == "critical":
        assert isinstance(event["exc_info"], RuntimeError)
    elif case.name == "builtin_timeout":
        assert isinstance(event["exc_info"], builtins.TimeoutError)
    else:
        assert "exc_info" not in event

    go_code = go_code_name(case.code)
    sample = registry.get_sample_value
    assert sample("grpc_server_started_total", _labels(shape)) == 1
    assert sample("grpc_server_handled_total", _labels(shape, grpc_code=go_code)) == 1
    assert sample("grpc_server_handled_total", _labels(shape, grpc_code="OK")) == 0
    assert sample("grpc_server_handling_seconds_count", _labels(shape)) == 1
    assert sample("octollm_errors_total",
                  {"error_type": case.error_code, "component": "grpc_server"}) == 1
    assert sample("octollm_error_duration_seconds_count", {"error_type": case.error_code}) == 1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_sync_matrix(case: Case, shape: str) -> None:
    """Sync server: mapped code, decodable details, request id, no secret, one log, counts."""
    registry = CollectorRegistry()
    script = Script(error=case.make)
    interceptors = server_interceptors(metrics=ServerMetrics(registry))
    with capture_logs() as logs, sync_server(sync_handlers(script), interceptors) as target:
        outcome = call_sync(target, shape, [("x-request-id", RID)])
    _check(case, shape, outcome, logs, registry)
    # grpcio-status accepts the trailer: code and message come from one source.
    status = rpc_status.from_call(outcome.error)
    assert status is not None and status.code == case.code.value[0]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_aio_matrix(case: Case, shape: str) -> None:
    """aio server: mapped code, decodable details, request id, no secret, one log, counts."""
    registry = CollectorRegistry()
    script = Script(error=case.make)
    interceptors = server_aio.server_interceptors(metrics=ServerMetrics(registry))
    with capture_logs() as logs:
        async with aio_server(aio_handlers(script), interceptors) as target:
            outcome = await call_aio(target, shape, [("x-request-id", RID)])
    _check(case, shape, outcome, logs, registry)


def _check_success(shape: str, outcome: Outcome, logs: list[dict[str, Any]],
                   registry: CollectorRegistry) -> None:
    assert outcome.error is None
    assert outcome.messages[-1] == b"done"
    assert outcome.trailers["x-request-id"] == RID
    assert logs == []
    sample = registry.get_sample_value
    assert sample("grpc_server_started_total", _labels(shape)) == 1
    assert sample("grpc_server_handled_total", _labels(shape, grpc_code="OK")) == 1
    assert sample("grpc_server_handling_seconds_count", _labels(shape)) == 1
    assert sample("octollm_errors_total",
                  {"error_type": "INTERNAL_ERROR", "component": "grpc_server"}) is None


@pytest.mark.parametrize("shape", SHAPES)
def test_sync_success(shape: str) -> None:
    """Sync success: no log event, OK counted once, request id in the trailers."""
    registry = CollectorRegistry()
    interceptors = server_interceptors(metrics=ServerMetrics(registry))
    with capture_logs() as logs, sync_server(sync_handlers(Script(messages=2)),
                                             interceptors) as target:
        outcome = call_sync(target, shape, [("x-request-id", RID)])
    _check_success(shape, outcome, logs, registry)


@pytest.mark.parametrize("shape", SHAPES)
async def test_aio_success(shape: str) -> None:
    """aio success: no log event, OK counted once, request id in the trailers."""
    registry = CollectorRegistry()
    interceptors = server_aio.server_interceptors(metrics=ServerMetrics(registry))
    with capture_logs() as logs:
        async with aio_server(aio_handlers(Script(messages=2)), interceptors) as target:
            outcome = await call_aio(target, shape, [("x-request-id", RID)])
    _check_success(shape, outcome, logs, registry)


# grpc.aio serves plain `def` handlers too (in its thread pool): they get the whole stack.


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_aio_def_handler_matrix(case: Case, shape: str) -> None:
    """aio server, `def` handlers: mapped code, details, request id, no secret, one log, counts."""
    registry = CollectorRegistry()
    script = Script(error=case.make)
    interceptors = server_aio.server_interceptors(metrics=ServerMetrics(registry))
    with capture_logs() as logs:
        async with aio_server(sync_handlers(script), interceptors) as target:
            outcome = await call_aio(target, shape, [("x-request-id", RID)])
    _check(case, shape, outcome, logs, registry)


@pytest.mark.parametrize("shape", SHAPES)
async def test_aio_def_handler_success(shape: str) -> None:
    """aio server, `def` handlers: success is counted once, request id in the trailers."""
    registry = CollectorRegistry()
    interceptors = server_aio.server_interceptors(metrics=ServerMetrics(registry))
    with capture_logs() as logs:
        async with aio_server(sync_handlers(Script(messages=2)), interceptors) as target:
            outcome = await call_aio(target, shape, [("x-request-id", RID)])
    _check_success(shape, outcome, logs, registry)


@pytest.mark.parametrize("shape", SHAPES)
async def test_aio_def_handler_sees_the_request_id(shape: str) -> None:
    """A `def` handler on aio reads the call's request id and logs with it bound."""
    seen: list[str | None] = []
    script = Script(before=lambda context: seen.append(current_request_id()))
    interceptors = server_aio.server_interceptors(metrics=False)
    async with aio_server(sync_handlers(script), interceptors) as target:
        outcome = await call_aio(target, shape, [("x-request-id", RID)])
    assert outcome.error is None
    assert seen == [RID]


async def _early_failure(target: str, shape: str) -> Outcome:
    # A sync client (in a thread: the server runs on this loop). An aio client still writing
    # requests when the call ends early may see INTERNAL instead of the status (a client-side
    # race, see the harness).
    return await asyncio.to_thread(call_sync, target, shape, [("x-request-id", RID)])


@pytest.mark.parametrize("shape", SHAPES)
async def test_aio_def_handler_abort_keeps_its_status(shape: str) -> None:
    """A `def` handler's own context.abort ends the call with its code, message and request id."""

    def abort(context: Any) -> None:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now")
        raise AssertionError("abort returned")  # grpc.aio's own sync context returns here

    registry = CollectorRegistry()
    interceptors = server_aio.server_interceptors(metrics=ServerMetrics(registry))
    with capture_logs() as logs:
        async with aio_server(sync_handlers(Script(before=abort)), interceptors) as target:
            outcome = await _early_failure(target, shape)
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert outcome.error.details() == "not now"
    assert outcome.trailers["x-request-id"] == RID
    assert [(x["grpc_code"], x["log_level"]) for x in logs] == [
        ("FAILED_PRECONDITION", "warning")]
    assert registry.get_sample_value(
        "grpc_server_handled_total", _labels(shape, grpc_code="FailedPrecondition")) == 1


@pytest.mark.parametrize("shape", SHAPES)
async def test_aio_def_handler_set_code_then_raise(shape: str) -> None:
    """A `def` handler that sets a code and raises keeps its code; the text stays private."""

    def fail(context: Any) -> None:
        context.set_code(grpc.StatusCode.ABORTED)
        context.set_details("try again")
        raise RuntimeError(f"{SECRET} dsn=postgres://u:p@db")

    interceptors = server_aio.server_interceptors(metrics=False)
    async with aio_server(sync_handlers(Script(before=fail)), interceptors) as target:
        outcome = await _early_failure(target, shape)
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.ABORTED
    assert outcome.error.details() == "try again"
    assert outcome.trailers["x-request-id"] == RID
    assert SECRET not in repr((outcome.error.details(), outcome.trailers))


@pytest.mark.parametrize("shape", SHAPES)
async def test_aio_def_handler_is_authenticated(shape: str) -> None:
    """`def` handlers on aio: no token is UNAUTHENTICATED, with sync and async verifiers."""
    tokens = StaticTokens({"tok-81d07e": ["read"]})

    async def verify(token: str) -> frozenset[str] | None:
        return tokens(token)

    script = Script()
    for verifier in (tokens, verify):
        auth = BearerAuth(verifier, default_scopes=["read"])
        interceptors = server_aio.server_interceptors(metrics=False, auth=auth)
        async with aio_server(sync_handlers(script), interceptors) as target:
            denied = await _early_failure(target, shape)
            allowed = await call_aio(target, shape, [("authorization", "Bearer tok-81d07e")])
        assert denied.error is not None
        assert denied.error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert type(from_rpc_error(denied.error)) is e.AuthenticationError
        assert allowed.error is None and allowed.messages[-1] == b"done"


@pytest.mark.parametrize("shape", SHAPES)
async def test_aio_def_handler_is_rate_limited(shape: str) -> None:
    """`def` handlers on aio are rate limited like coroutine handlers."""
    limiter = RateLimiter(RateLimit(limit=1, window=60, burst=1), clock=FakeClock().now)
    interceptors = server_aio.server_interceptors(metrics=False, rate_limit=limiter)
    async with aio_server(sync_handlers(Script()), interceptors) as target:
        first = await call_aio(target, shape)
        second = await _early_failure(target, shape)
    assert first.error is None
    assert second.error is not None
    assert second.error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert from_rpc_error(second.error).retry_after == 60


def test_sync_stack_refuses_an_async_verifier_at_start_up() -> None:
    """The sync stack cannot await a coroutine verifier: it says so when built, not per call."""

    async def verify(token: str) -> frozenset[str] | None:
        return None

    with pytest.raises(TypeError, match="aio"):
        server_interceptors(auth=BearerAuth(verify))
