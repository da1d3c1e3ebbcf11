"""Streams: errors after some messages, and client cancellations, on both stacks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.server import ServerMetrics, server_interceptors
from octollm_grpc.server import aio as server_aio
from octollm_grpc.status import from_rpc_error
from tests.server.harness import Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server

STREAMS = ("server_stream", "bidi_stream")


@pytest.mark.parametrize("shape", STREAMS)
def test_sync_mid_stream_error_delivers_messages_then_status(shape: str) -> None:
    """Sync: 3 messages then TaskNotFoundError -> the client gets the 3, then NOT_FOUND."""
    script = Script(error=lambda: e.TaskNotFoundError("t-3"), messages=3)
    with capture_logs() as logs, sync_server(sync_handlers(script),
                                             server_interceptors(metrics=False)) as target:
        outcome = call_sync(target, shape)
    assert outcome.messages == [b"m0", b"m1", b"m2"]
    assert outcome.error is not None
    decoded = from_rpc_error(outcome.error)
    assert decoded == e.TaskNotFoundError("t-3")
    assert decoded.code() is grpc.StatusCode.NOT_FOUND
    assert [(x["log_level"], x["error_code"]) for x in logs] == [("warning", "TASK_NOT_FOUND")]


@pytest.mark.parametrize("shape", STREAMS)
async def test_aio_mid_stream_error_delivers_messages_then_status(shape: str) -> None:
    """aio: 3 messages then RuntimeError -> the client gets the 3, then INTERNAL (generic)."""
    script = Script(error=lambda: RuntimeError("secret"), messages=3)
    with capture_logs() as logs:
        async with aio_server(aio_handlers(script),
                              server_aio.server_interceptors(metrics=False)) as target:
            outcome = await call_aio(target, shape)
    assert outcome.messages == [b"m0", b"m1", b"m2"]
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert "secret" not in outcome.error.details()  # type: ignore[attr-defined]
    assert type(from_rpc_error(outcome.error)) is e.InternalError
    assert [x["log_level"] for x in logs] == ["critical"]


async def test_aio_writer_coroutine_mid_stream_error() -> None:
    """aio: a coroutine streaming with context.write() keeps its kind and maps a late error."""

    async def write_then_fail(request: bytes, context: Any) -> None:
        for i in range(3):
            await context.write(b"w%d" % i)
        raise e.CapacityExceededError("full")

    handlers = [grpc.method_handlers_generic_handler("test.Shapes", {
        "ServerStream": grpc.unary_stream_rpc_method_handler(write_then_fail)})]
    with capture_logs() as logs:
        async with aio_server(handlers, server_aio.server_interceptors(metrics=False)) as target:
            outcome = await call_aio(target, "server_stream")
    assert outcome.messages == [b"w0", b"w1", b"w2"]
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert from_rpc_error(outcome.error) == e.CapacityExceededError("full")
    assert [x["log_level"] for x in logs] == ["error"]


def _canceled(registry: CollectorRegistry, rpc_type: str, method: str) -> float | None:
    return registry.get_sample_value("grpc_server_handled_total", {
        "grpc_type": rpc_type, "grpc_service": "test.Cancel", "grpc_method": method,
        "grpc_code": "Canceled"})


def _wait_for(predicate: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_sync_client_cancel_of_server_stream_is_not_an_error() -> None:
    """Sync: a client cancelling a server stream is counted as Canceled and never logged."""
    registry = CollectorRegistry()

    def endless(request: bytes, context: Any) -> Iterator[bytes]:
        for i in range(5000):  # bounded; the client cancels after the first message
            yield b"%d" % i
            time.sleep(0.001)

    handlers = [grpc.method_handlers_generic_handler("test.Cancel", {
        "Stream": grpc.unary_stream_rpc_method_handler(endless)})]
    with capture_logs() as logs, sync_server(
            handlers, server_interceptors(metrics=ServerMetrics(registry))) as target, \
            grpc.insecure_channel(target) as channel:
        call = channel.unary_stream("/test.Cancel/Stream")(b"", timeout=10)
        assert next(call) == b"0"
        call.cancel()
        assert _wait_for(lambda: _canceled(registry, "server_stream", "Stream") == 1)
    assert logs == []
    assert registry.get_sample_value(
        "octollm_errors_total", {"error_type": "CANCELLED", "component": "grpc_server"}) is None


def test_sync_client_cancel_of_client_stream_is_not_an_error() -> None:
    """Sync: the request iterator's RpcError on cancellation is not mapped, logged or counted."""
    registry = CollectorRegistry()
    reading = threading.Event()
    release = threading.Event()

    def consume(requests: Iterator[bytes], context: Any) -> bytes:
        next(requests)
        reading.set()
        # Until the server has seen the cancellation, the iterator may simply end (a grpc
        # race); once it has, reading raises the bare RpcError this test is about.
        _wait_for(lambda: not context.is_active())
        return b"%d" % len(list(requests))

    def requests() -> Iterator[bytes]:
        yield b"first"
        release.wait(5)

    handlers = [grpc.method_handlers_generic_handler("test.Cancel", {
        "Upload": grpc.stream_unary_rpc_method_handler(consume)})]
    with capture_logs() as logs, sync_server(
            handlers, server_interceptors(metrics=ServerMetrics(registry))) as target, \
            grpc.insecure_channel(target) as channel:
        future = channel.stream_unary("/test.Cancel/Upload").future(requests(), timeout=10)
        assert reading.wait(5)
        future.cancel()
        release.set()
        assert _wait_for(lambda: _canceled(registry, "client_stream", "Upload") == 1)
    assert logs == []


async def test_aio_client_cancel_is_not_an_error() -> None:
    """aio: a cancelled call's CancelledError propagates, counted as Canceled, never logged."""
    registry = CollectorRegistry()
    started = asyncio.Event()

    async def slow(request: bytes, context: Any) -> bytes:
        started.set()
        await asyncio.sleep(10)
        return b"late"

    async def endless(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(5000):
            yield b"%d" % i
            await asyncio.sleep(0.001)

    handlers = [grpc.method_handlers_generic_handler("test.Cancel", {
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Stream": grpc.unary_stream_rpc_method_handler(endless)})]
    with capture_logs() as logs:
        async with aio_server(handlers, server_aio.server_interceptors(
                metrics=ServerMetrics(registry))) as target, \
                grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary("/test.Cancel/Slow")(b"", timeout=10)
            await asyncio.wait_for(started.wait(), 5)
            call.cancel()
            stream = channel.unary_stream("/test.Cancel/Stream")(b"", timeout=10)
            assert await stream.read() == b"0"
            stream.cancel()
            for _ in range(1000):
                if (_canceled(registry, "unary", "Slow") == 1
                        and _canceled(registry, "server_stream", "Stream") == 1):
                    break
                await asyncio.sleep(0.005)
    assert _canceled(registry, "unary", "Slow") == 1
    assert _canceled(registry, "server_stream", "Stream") == 1
    assert logs == []
