"""Logging through structlog's public API only: request ids and the failed-call logger."""

from __future__ import annotations

import contextvars
import io
import json
from typing import Any

import structlog

from octollm_grpc import errors as e
from octollm_grpc.observability._logs import (
    CallLogger,
    bind_request_id,
    configure_logging,
    unbind_request_id,
)
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from tests.server.harness import Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server


def _log_step(context: Any) -> None:
    structlog.get_logger("handler").info("handler.step")


def _events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _ids(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(x["event"], x.get("request_id")) for x in events]


def test_sync_production_config_binds_each_calls_id() -> None:
    """Sync, configure_logging (cached loggers): handler and failure events carry their id."""
    out = io.StringIO()
    configure_logging(json=True, stream=out, background=False)
    script = Script(before=_log_step, error=lambda: e.TaskNotFoundError("t"))
    with sync_server(sync_handlers(script), server_interceptors(metrics=False),
                     workers=1) as target:
        call_sync(target, "unary", [("x-request-id", "sync-1")])
        second = call_sync(target, "unary")
    other = second.trailers["x-request-id"]
    assert other != "sync-1"
    assert _ids(_events(out)) == [("handler.step", "sync-1"), ("grpc.call.failed", "sync-1"),
                                  ("handler.step", other), ("grpc.call.failed", other)]


async def test_aio_production_config_binds_each_calls_id() -> None:
    """aio, configure_logging (cached loggers): handler and failure events carry their id."""
    out = io.StringIO()
    configure_logging(json=True, stream=out, background=False)
    script = Script(before=_log_step, error=lambda: e.CacheError("cold"))
    async with aio_server(aio_handlers(script),
                          server_aio.server_interceptors(metrics=False)) as target:
        await call_aio(target, "unary", [("x-request-id", "aio-1")])
        await call_aio(target, "bidi_stream", [("x-request-id", "aio-2")])
    assert _ids(_events(out)) == [("handler.step", "aio-1"), ("grpc.call.failed", "aio-1"),
                                  ("handler.step", "aio-2"), ("grpc.call.failed", "aio-2")]
    assert "request_id" not in structlog.contextvars.get_contextvars()


def test_bind_is_seen_by_merge_contextvars_and_undone() -> None:
    """bind_request_id shows in get_contextvars; unbind restores the previous value."""
    outer = bind_request_id("outer")
    inner = bind_request_id("inner")
    assert structlog.contextvars.get_contextvars()["request_id"] == "inner"
    unbind_request_id(inner)
    assert structlog.contextvars.get_contextvars()["request_id"] == "outer"
    unbind_request_id(outer)
    assert "request_id" not in structlog.contextvars.get_contextvars()


def test_unbind_from_another_context_clears_the_key_there() -> None:
    """A token from another context does not raise: the key is cleared where unbind runs."""
    token = contextvars.copy_context().run(bind_request_id, "elsewhere")
    here = bind_request_id("here")

    def unbind_foreign() -> dict[str, Any]:
        unbind_request_id(token)
        return structlog.contextvars.get_contextvars()

    assert "request_id" not in contextvars.copy_context().run(unbind_foreign)
    unbind_request_id(here)


class _CountingLogger:
    """A structlog-style logger that counts ``bind()`` and keeps what it is asked to log."""

    def __init__(self) -> None:
        self.binds = 0
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def bind(self) -> _CountingLogger:
        self.binds += 1
        return self

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def _fail(logger: CallLogger) -> None:
    logger.failed("warning", method="/a.B/C", grpc_code="NOT_FOUND",
                  error_code="TASK_NOT_FOUND", request_id="r", duration=0.002, peer=None)


def test_call_logger_binds_once_when_structlog_caches_loggers() -> None:
    """cache_logger_on_first_use=True: one bind() (a local logger), then direct calls."""
    structlog.configure(cache_logger_on_first_use=True)
    logger = _CountingLogger()
    call_logger = CallLogger(logger)
    for _ in range(3):
        _fail(call_logger)
    assert logger.binds == 1
    assert [event for event, _ in logger.lines] == ["grpc.call.failed"] * 3
    assert logger.lines[0][1]["duration_ms"] == 2.0


def test_call_logger_sees_reconfiguration_when_structlog_does_not_cache() -> None:
    """cache_logger_on_first_use=False: the proxy is used each time, so capture_logs works."""
    structlog.configure(cache_logger_on_first_use=False)
    call_logger = CallLogger()
    with structlog.testing.capture_logs() as first:
        _fail(call_logger)
    with structlog.testing.capture_logs() as second:
        _fail(call_logger)
    assert [x["event"] for x in first] == [x["event"] for x in second] == ["grpc.call.failed"]
    counting = _CountingLogger()
    _fail(CallLogger(counting))
    assert counting.binds == 0 and len(counting.lines) == 1


def test_call_logger_on_a_cached_proxy_writes_to_the_configured_output() -> None:
    """The default logger under configure_logging writes each event to the stream."""
    out = io.StringIO()
    configure_logging(json=True, stream=out, background=False)
    call_logger = CallLogger()
    _fail(call_logger)
    _fail(call_logger)
    events = _events(out)
    assert [x["event"] for x in events] == ["grpc.call.failed"] * 2
    assert events[1]["error_code"] == "TASK_NOT_FOUND" and events[1]["level"] == "warning"
