"""OpenTelemetry: a failed call marks the current span; retries are span events; no otel ok.

A tiny server interceptor of the test's own starts a span around the call, outside our stack
(test_otel_instrumentation.py does the same with the real opentelemetry-instrumentation-grpc).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from structlog.testing import LogCapture, capture_logs

from octollm_grpc import errors
from octollm_grpc.client import RetryPolicy
from octollm_grpc.observability import _otel as otel
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import configure_logging, server_interceptors
from octollm_grpc.testing import FakeClock
from tests.client.backend import FAIL, SUCCEED, UNARY, Backend
from tests.client.channels import aio_channel, sync_channel
from tests.servers import aio_server, sync_server

SECRET = "db password is hunter2"


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """An SDK provider of the test's own (the global one is left alone), exporting in memory."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    yield provider
    provider.shutdown()


def _exporter(provider: TracerProvider) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(provider: TracerProvider) -> tuple[trace.Tracer, InMemorySpanExporter]:
    """A tracer of the test's provider and the exporter that receives its spans."""
    return provider.get_tracer("test"), _exporter(provider)


class _SpanAround(grpc.ServerInterceptor):
    """What opentelemetry-instrumentation-grpc's server interceptor does: a current span."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        behavior = handler.unary_unary

        def traced(request: Any, context: Any) -> Any:
            with self._tracer.start_as_current_span(details.method, record_exception=False,
                                                    set_status_on_exception=False):
                return behavior(request, context)

        return handler._replace(unary_unary=traced)


def _service(kind: str) -> grpc.GenericRpcHandler:
    def get(request: bytes, context: Any) -> bytes:
        if kind == "not_found":
            raise errors.TaskNotFoundError("task-9")
        raise RuntimeError(SECRET)

    return grpc.method_handlers_generic_handler("test.Tasks", {
        "Get": grpc.unary_unary_rpc_method_handler(get)})


def _failed_span(tracer: trace.Tracer, exporter: InMemorySpanExporter, kind: str) -> Any:
    stack = [_SpanAround(tracer), *server_interceptors(metrics=False)]
    with capture_logs() as logs, sync_server([_service(kind)], stack) as target, \
            grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError):
            channel.unary_unary("/test.Tasks/Get")(b"x", metadata=(("x-request-id", "r-1"),))
    (span,) = exporter.get_finished_spans()
    return span, logs


def test_failed_call_sets_span_status_and_attributes(spans: Any) -> None:
    """TaskNotFoundError: span ERROR with the safe message, code 5, error.type, request id."""
    tracer, exporter = spans
    span, _logs = _failed_span(tracer, exporter, "not_found")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "Task task-9 not found"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert span.attributes["error.type"] == "TASK_NOT_FOUND"
    assert span.attributes["octollm.request_id"] == "r-1"


def test_unexpected_error_text_never_reaches_the_span(spans: Any) -> None:
    """An unexpected exception: generic message and INTERNAL_ERROR; its text nowhere in the span."""
    tracer, exporter = spans
    span, _logs = _failed_span(tracer, exporter, "bug")
    assert span.status.description == "An internal error occurred"
    assert span.attributes["error.type"] == "INTERNAL_ERROR"
    assert SECRET not in repr(dict(span.attributes)) + repr(span.events)


def test_log_events_carry_trace_and_span_ids(spans: Any) -> None:
    """The processor adds the current span's trace_id and span_id to an event."""
    tracer, _exporter = spans
    with tracer.start_as_current_span("outer") as span:
        event = otel.add_trace_ids(None, "info", {"event": "x"})
        context = span.get_span_context()
    assert event["trace_id"] == format(context.trace_id, "032x")
    assert event["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in otel.add_trace_ids(None, "info", {"event": "y"})


def test_retries_are_span_events(spans: Any, clock: FakeClock) -> None:
    """Sync: two retries inside a client span become two rpc.retry events with their delays."""
    tracer, exporter = spans
    backend = Backend([FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, retry=RetryPolicy(max_attempts=4),
                               registry=CollectorRegistry())
        with tracer.start_as_current_span("client"):
            assert channel.unary_unary(UNARY)(b"x") == b"ok"
    (span,) = exporter.get_finished_spans()
    events = [e for e in span.events if e.name == "rpc.retry"]
    assert [e.attributes["octollm.attempt"] for e in events] == [2, 3]
    assert [e.attributes["octollm.retry.code"] for e in events] == ["UNAVAILABLE"] * 2
    assert [e.attributes["octollm.retry.delay_s"] for e in events] == clock.sleeps


def test_library_works_without_opentelemetry() -> None:
    """With opentelemetry unimportable, the library imports and its hooks are no-ops."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'opentelemetry' or name.startswith('opentelemetry.'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import grpc\n"
        "from octollm_grpc.observability import _otel as otel\n"
        "import octollm_grpc.client, octollm_grpc.server\n"
        "assert not otel.AVAILABLE\n"
        "otel.retry_event(2, grpc.StatusCode.UNAVAILABLE, 0.1)\n"
        "otel.call_failed(grpc.StatusCode.NOT_FOUND, 'TASK_NOT_FOUND', 'm', 'r')\n"
        "assert otel.add_trace_ids(None, 'info', {}) == {}\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_global_provider_set_after_calls_is_used_from_the_next_call() -> None:
    """A server built (and called) before the application sets the global provider traces
    the calls that follow (a process of its own: the global provider is set once)."""
    code = (
        "from concurrent import futures\n"
        "import grpc\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import "
        "InMemorySpanExporter\n"
        "from octollm_grpc.server import server_interceptors\n"
        "handler = grpc.method_handlers_generic_handler('test.S', {\n"
        "    'M': grpc.unary_unary_rpc_method_handler(lambda request, context: request)})\n"
        "server = grpc.server(futures.ThreadPoolExecutor(2),\n"
        "                     interceptors=server_interceptors(metrics=False))\n"
        "server.add_generic_rpc_handlers((handler,))\n"
        "port = server.add_insecure_port('127.0.0.1:0')\n"
        "server.start()\n"
        "with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:\n"
        "    call = channel.unary_unary('/test.S/M')\n"
        "    assert call(b'a') == b'a' and call(b'b') == b'b'\n"
        "    provider = TracerProvider()\n"
        "    exporter = InMemorySpanExporter()\n"
        "    provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "    trace.set_tracer_provider(provider)\n"
        "    assert call(b'c') == b'c'\n"
        "server.stop(None)\n"
        "print([(s.name, s.kind.name) for s in exporter.get_finished_spans()])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[('test.S/M', 'SERVER')]"


# -- one trace across two real hops ---------------------------------------------------------

DOWN = "/test.Down/Get"


class _Downstream:
    """First attempt: ArmUnavailableError (retryable); then TaskNotFoundError."""

    def __init__(self) -> None:
        self.calls = 0

    def get(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        if self.calls == 1:
            raise errors.ArmUnavailableError(["llm.complete"])
        raise errors.TaskNotFoundError("task-9")

    async def get_async(self, request: bytes, context: Any) -> bytes:
        return self.get(request, context)

    def handler(self, aio: bool) -> grpc.GenericRpcHandler:
        behavior = self.get_async if aio else self.get
        return grpc.method_handlers_generic_handler("test.Down", {
            "Get": grpc.unary_unary_rpc_method_handler(behavior)})


def _assert_one_trace(exporter: InMemorySpanExporter, clock: FakeClock) -> None:
    finished = exporter.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    (client,) = by_name["client"]
    (middle,) = by_name["test.Middle/Call"]
    down = sorted(by_name["test.Down/Get"], key=lambda span: span.start_time)
    assert len(down) == 2  # one server span per attempt
    assert {span.context.trace_id for span in finished} == {client.context.trace_id}
    assert middle.parent.span_id == client.context.span_id
    assert middle.kind is trace.SpanKind.SERVER
    assert all(span.parent.span_id == middle.context.span_id for span in down)
    assert [span.attributes["error.type"] for span in down] == [
        "ARM_UNAVAILABLE", "TASK_NOT_FOUND"]
    # The request id travelled with the trace: every server span carries the caller's.
    assert {span.attributes["octollm.request_id"] for span in (middle, *down)} == {"r-2hop"}
    assert middle.status.status_code is StatusCode.ERROR
    assert middle.status.description == "Task task-9 not found"
    assert middle.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    (retry,) = [e for e in middle.events if e.name == "rpc.retry"]
    assert retry.attributes["octollm.attempt"] == 2
    assert retry.attributes["octollm.retry.code"] == "UNAVAILABLE"
    assert retry.attributes["octollm.retry.delay_s"] == clock.sleeps[0]


def test_sync_two_hops_make_one_trace(provider: TracerProvider, clock: FakeClock,
                                      restore_structlog: None) -> None:
    """Sync: client -> middle -> downstream (retried once): one trace, linked spans, codes;
    each hop's failure log event carries the trace id and its own server span's id."""
    # Our processor in front of a capture; no logger caching, so module loggers stay unbound.
    capture = LogCapture()
    structlog.configure(processors=[otel.add_trace_ids, capture],
                        cache_logger_on_first_use=False)
    exporter = _exporter(provider)
    tracer = provider.get_tracer("test")
    stack = server_interceptors(metrics=False, tracer_provider=provider)
    downstream = _Downstream()
    with sync_server([downstream.handler(aio=False)], stack) as down_target:
        down = sync_channel(down_target, clock, retry=RetryPolicy(max_attempts=3))
        call_down = down.unary_unary(DOWN)

        def middle(request: bytes, context: Any) -> bytes:
            answer: bytes = call_down(request)
            return answer

        handler = grpc.method_handlers_generic_handler("test.Middle", {
            "Call": grpc.unary_unary_rpc_method_handler(middle)})
        with sync_server([handler], stack) as target:
            channel = sync_channel(target, clock)
            with tracer.start_as_current_span("client"), \
                    pytest.raises(errors.TaskNotFoundError):
                channel.unary_unary("/test.Middle/Call")(
                    b"x", metadata=(("x-request-id", "r-2hop"),))
            channel.close()
        down.close()
    _assert_one_trace(exporter, clock)
    failed = [event for event in capture.entries if event["event"] == "grpc.call.failed"]
    server_spans = {format(span.context.span_id, "016x"): span.name
                    for span in exporter.get_finished_spans() if span.name != "client"}
    assert len(failed) == 3  # two downstream attempts, then the middle call
    (trace_id,) = {format(span.context.trace_id, "032x")
                   for span in exporter.get_finished_spans()}
    assert {line["trace_id"] for line in failed} == {trace_id}
    assert sorted(server_spans[line["span_id"]] for line in failed) == [
        "test.Down/Get", "test.Down/Get", "test.Middle/Call"]


async def test_aio_two_hops_make_one_trace(provider: TracerProvider, clock: FakeClock) -> None:
    """Aio: the same two hops on grpc.aio servers and channels make the same one trace."""
    exporter = _exporter(provider)
    tracer = provider.get_tracer("test")
    stack = server_aio.server_interceptors(metrics=False, tracer_provider=provider)
    downstream = _Downstream()
    async with aio_server([downstream.handler(aio=True)], stack) as down_target, \
            aio_channel(down_target, clock, retry=RetryPolicy(max_attempts=3)) as down:
        call_down = down.unary_unary(DOWN)

        async def middle(request: bytes, context: Any) -> bytes:
            answer: bytes = await call_down(request)
            return answer

        handler = grpc.method_handlers_generic_handler("test.Middle", {
            "Call": grpc.unary_unary_rpc_method_handler(middle)})
        async with aio_server([handler], stack) as target, \
                aio_channel(target, clock) as channel:
            with tracer.start_as_current_span("client"):
                with pytest.raises(errors.TaskNotFoundError):
                    await channel.unary_unary("/test.Middle/Call")(
                        b"x", metadata=(("x-request-id", "r-2hop"),))
    _assert_one_trace(exporter, clock)


def test_no_span_without_a_provider_or_under_an_active_one(spans: Any) -> None:
    """No provider set (the global default): no span; a current span: ours is not started."""
    tracer, exporter = spans
    assert otel.active_tracer() is None  # this process never sets a global provider
    with tracer.start_as_current_span("instrumentation"):
        assert otel.start_server_span(tracer, "/a.S/M", ()) is None
    (only,) = exporter.get_finished_spans()
    assert only.name == "instrumentation"


def test_configured_log_lines_carry_trace_ids(spans: Any,
                                              restore_structlog: None) -> None:
    """configure_logging(): a line written inside a span has its trace_id and span_id."""
    tracer, _exporter = spans
    out = io.StringIO()
    configure_logging(json=True, stream=out, background=False)
    with tracer.start_as_current_span("work") as span:
        structlog.get_logger("t").info("inside")
    structlog.get_logger("t").info("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in outside
