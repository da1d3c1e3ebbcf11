"""Logging setup, metric families on shared registries, and the /metrics endpoint."""

from __future__ import annotations

import io
import json
import urllib.request

import grpc
import structlog
from prometheus_client import CollectorRegistry

from octollm_grpc import errors as e
from octollm_grpc.observability._server_metrics import go_code_name
from octollm_grpc.server import (
    CallLogger,
    ServerMetrics,
    configure_logging,
    flush_logs,
    serve_metrics,
    server_interceptors,
)
from octollm_grpc.server import aio as server_aio
from tests.server.harness import Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server


def test_json_logging_has_request_id_level_and_traceback(restore_structlog: None) -> None:
    """configure_logging(json=True): one JSON line, request id, critical, traceback text."""
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    script = Script(error=lambda: RuntimeError("boom in handler"))
    with sync_server(sync_handlers(script), server_interceptors(metrics=False)) as target:
        call_sync(target, "unary", [("x-request-id", "json-1")])
    flush_logs()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 1
    event = lines[0]
    assert event["event"] == "grpc.call.failed"
    assert event["level"] == "critical"
    assert event["request_id"] == "json-1"
    assert "RuntimeError: boom in handler" in event["exception"]
    assert event["timestamp"].endswith("Z")


def test_console_logging_for_terminals(restore_structlog: None) -> None:
    """json=None picks JSON for a pipe, console rendering for a terminal; levels filter."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    configure_logging(stream=tty)
    structlog.get_logger().warning("terminal.event", answer=42)
    structlog.get_logger().debug("dropped.event")
    flush_logs()
    text = tty.getvalue()
    assert "terminal.event" in text and "answer" in text
    assert not text.lstrip().startswith("{")
    assert "dropped.event" not in text

    pipe = io.StringIO()
    configure_logging(stream=pipe)
    structlog.get_logger().info("pipe.event")
    flush_logs()
    assert json.loads(pipe.getvalue())["event"] == "pipe.event"


def test_custom_logger_and_logging_off() -> None:
    """A given logger receives the event; logger=False logs nothing."""
    from structlog.testing import capture_logs

    seen: list[tuple[str, str]] = []

    class Recorder:
        def warning(self, event: str, **fields: object) -> None:
            seen.append((event, str(fields["error_code"])))

    script = Script(error=lambda: e.TaskNotFoundError("t"))
    with sync_server(sync_handlers(script),
                     server_interceptors(metrics=False,
                                         logger=CallLogger(Recorder(), event="rpc.failed"))
                     ) as target:
        call_sync(target, "unary")
    assert seen == [("rpc.failed", "TASK_NOT_FOUND")]
    with capture_logs() as logs, sync_server(
            sync_handlers(script), server_interceptors(metrics=False, logger=False)) as target:
        outcome = call_sync(target, "unary")
    assert outcome.error is not None
    assert logs == []


async def test_sync_and_aio_share_one_registry() -> None:
    """Two stacks on one registry: families are created once and both count into them."""
    registry = CollectorRegistry()
    script = Script(error=lambda: e.DatabaseError("insert", ValueError("dup")))
    with sync_server(sync_handlers(script),
                     server_interceptors(metrics=ServerMetrics(registry))) as target:
        call_sync(target, "unary")
    async with aio_server(aio_handlers(script), server_aio.server_interceptors(
            metrics=ServerMetrics(registry, component="worker"))) as target:
        await call_aio(target, "unary")
    sample = registry.get_sample_value
    labels = {"grpc_type": "unary", "grpc_service": "test.Shapes", "grpc_method": "Unary"}
    assert sample("grpc_server_handled_total", {**labels, "grpc_code": "Internal"}) == 2
    assert sample("octollm_errors_total",
                  {"error_type": "DATABASE_ERROR", "component": "grpc_server"}) == 1
    assert sample("octollm_errors_total",
                  {"error_type": "DATABASE_ERROR", "component": "worker"}) == 1
    assert sample("octollm_error_duration_seconds_count", {"error_type": "DATABASE_ERROR"}) == 2


def test_default_registry_can_be_used_twice() -> None:
    """server_interceptors() twice (default registry) does not raise duplicate-metric errors."""
    first = server_interceptors()
    second = server_aio.server_interceptors()
    assert len(first) == 1 and len(second) == 1


def test_serve_metrics_exposes_the_families() -> None:
    """serve_metrics(port=0) serves /metrics with the gRPC and octollm families."""
    registry = CollectorRegistry()
    script = Script(error=lambda: e.TaskNotFoundError("t"))
    with sync_server(sync_handlers(script),
                     server_interceptors(metrics=ServerMetrics(registry))) as target:
        call_sync(target, "unary")
    server, thread = serve_metrics(port=0, registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert ('grpc_server_handled_total{grpc_code="NotFound",grpc_method="Unary",'
            'grpc_service="test.Shapes",grpc_type="unary"} 1.0') in text
    assert 'octollm_errors_total{component="grpc_server",error_type="TASK_NOT_FOUND"} 1.0' in text
    assert "grpc_server_handling_seconds_bucket" in text


def test_go_code_names() -> None:
    """grpc_code labels use Go's spelling, as go-grpc-prometheus dashboards expect."""
    assert go_code_name(grpc.StatusCode.OK) == "OK"
    assert go_code_name(grpc.StatusCode.CANCELLED) == "Canceled"
    assert go_code_name(grpc.StatusCode.RESOURCE_EXHAUSTED) == "ResourceExhausted"
    assert go_code_name(grpc.StatusCode.DEADLINE_EXCEEDED) == "DeadlineExceeded"
    assert go_code_name(grpc.StatusCode.UNAUTHENTICATED) == "Unauthenticated"


async def test_events_below_the_level_are_not_built(restore_structlog: None) -> None:
    """With level=ERROR a client error (warning) writes nothing, on both stacks; a server
    error still does. The stack asks the logger first, so a dropped event costs nothing."""
    import logging

    out = io.StringIO()
    configure_logging(json=True, stream=out, level=logging.ERROR)
    client_error = Script(error=lambda: e.TaskNotFoundError("t-9"))
    server_error = Script(error=lambda: e.DatabaseError("insert", ValueError("dup")))
    with sync_server(sync_handlers(client_error), server_interceptors(metrics=False)) as target:
        sync_outcome = call_sync(target, "unary")
    async with aio_server(aio_handlers(client_error),
                          server_aio.server_interceptors(metrics=False)) as target:
        aio_outcome = await call_aio(target, "unary")
    for outcome in (sync_outcome, aio_outcome):
        assert outcome.error is not None and outcome.error.code() is grpc.StatusCode.NOT_FOUND
    flush_logs()
    assert out.getvalue() == ""
    with sync_server(sync_handlers(server_error), server_interceptors(metrics=False)) as target:
        call_sync(target, "unary")
    flush_logs()
    [event] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (event["level"], event["error_code"]) == ("error", "DATABASE_ERROR")


async def test_peer_can_be_left_out_of_the_event() -> None:
    """CallLogger(peer=False): the event has every other field, and no peer, on both stacks."""
    from structlog.testing import capture_logs

    script = Script(error=lambda: e.TaskNotFoundError("t-3"))
    stack = {"metrics": False, "logger": CallLogger(peer=False)}
    with capture_logs() as logs:
        with sync_server(sync_handlers(script), server_interceptors(**stack)) as target:
            call_sync(target, "unary", [("x-request-id", "no-peer-1")])
        async with aio_server(aio_handlers(script),
                              server_aio.server_interceptors(**stack)) as target:
            await call_aio(target, "unary", [("x-request-id", "no-peer-2")])
    assert [event["request_id"] for event in logs] == ["no-peer-1", "no-peer-2"]
    for event in logs:
        assert "peer" not in event
        assert event["error_code"] == "TASK_NOT_FOUND" and "duration_ms" in event
