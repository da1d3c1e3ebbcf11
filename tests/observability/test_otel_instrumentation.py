"""Our stack under the real opentelemetry-instrumentation-grpc server interceptors.

The instrumentation starts the call's span (outermost); our stack, inside it, marks that span
when the call fails: status ERROR with the message that went on the wire, the gRPC code, the
error code and the request id (on aio the instrumentation then writes its own
"StatusCode.X:message" description over ours, from the same safe message). The text of an
unexpected exception reaches neither the span's attributes, its events nor its status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.instrumentation.grpc import aio_server_interceptor, server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from octollm_grpc import errors
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from tests.servers import aio_server, sync_server

SECRET = "dsn=postgres://admin:hunter2@db"
CASES = [
    ("not_found", grpc.StatusCode.NOT_FOUND, "Task task-9 not found", "TASK_NOT_FOUND"),
    ("bug", grpc.StatusCode.INTERNAL, "An internal error occurred", "INTERNAL_ERROR"),
]


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A provider of the test's own with an in-memory exporter (the global one is left alone)."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _raise(kind: str) -> None:
    if kind == "not_found":
        raise errors.TaskNotFoundError("task-9")
    raise RuntimeError(SECRET)


def _sync_service(kind: str) -> grpc.GenericRpcHandler:
    def get(request: bytes, context: Any) -> bytes:
        _raise(kind)
        return b""

    return grpc.method_handlers_generic_handler("test.Tasks", {
        "Get": grpc.unary_unary_rpc_method_handler(get)})


def _aio_service(kind: str) -> grpc.GenericRpcHandler:
    async def get(request: bytes, context: Any) -> bytes:
        _raise(kind)
        return b""

    return grpc.method_handlers_generic_handler("test.Tasks", {
        "Get": grpc.unary_unary_rpc_method_handler(get)})


def _check(exporter: InMemorySpanExporter, code: grpc.StatusCode, message: str,
           error_code: str) -> None:
    (span,) = exporter.get_finished_spans()
    assert span.name == "/test.Tasks/Get"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["rpc.grpc.status_code"] == code.value[0]
    assert span.attributes["error.type"] == error_code
    assert span.attributes["octollm.request_id"] == "r-otel"
    description = span.status.description or ""
    everything = repr(dict(span.attributes)) + repr(span.events) + description
    assert SECRET not in everything and "hunter2" not in everything
    # Ours, or the instrumentation's "StatusCode.X:message" written over it (aio): safe either way.
    assert message in description


@pytest.mark.parametrize(("kind", "code", "message", "error_code"), CASES)
def test_sync_instrumented_span_carries_our_failure(
    traced: Any, kind: str, code: grpc.StatusCode, message: str, error_code: str,
) -> None:
    """Sync server, real instrumentation outermost: its span gets our code, reason, request id."""
    provider, exporter = traced
    stack = [server_interceptor(tracer_provider=provider), *server_interceptors(metrics=False)]
    with sync_server([_sync_service(kind)], stack) as target, \
            grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary("/test.Tasks/Get")(b"x", metadata=(("x-request-id", "r-otel"),))
    assert caught.value.code() is code  # type: ignore[attr-defined]
    assert caught.value.details() == message  # type: ignore[attr-defined]
    _check(exporter, code, message, error_code)


@pytest.mark.parametrize(("kind", "code", "message", "error_code"), CASES)
async def test_aio_instrumented_span_carries_our_failure(
    traced: Any, kind: str, code: grpc.StatusCode, message: str, error_code: str,
) -> None:
    """aio server, real instrumentation outermost: the same."""
    provider, exporter = traced
    stack = [aio_server_interceptor(tracer_provider=provider),
             *server_aio.server_interceptors(metrics=False)]
    async with aio_server([_aio_service(kind)], stack) as target, \
            grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/test.Tasks/Get")(
                b"x", metadata=(("x-request-id", "r-otel"),))
    assert caught.value.code() is code
    _check(exporter, code, message, error_code)
