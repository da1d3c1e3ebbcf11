"""The grpcio pitfalls of DESIGN.md that concern server interceptors, one test (or two) each.

- sync ``context.abort`` raises a bare ``Exception``: ``test_sync_abort_*``
- exceptions from response generators surface after the handler returned: ``test_streams.py``
  (``*_mid_stream_error_*``), the wrapper wraps the iterator
- an aio wrapper keeps the handler's kind, aio ``AbortError`` propagates unchanged:
  ``test_aio_wrapper_keeps_kind``, ``test_aio_abort_*``, ``test_aio_writer_coroutine_*``
- ``abort_with_status`` replaces trailing metadata: ``test_*_handler_trailers_are_kept``
- ``from_call`` rejects a status whose code/message differ: ``test_matrix.py::test_sync_matrix``
- unregistered methods (handler ``None``): ``test_*_unregistered_method_passes_through``
- the aio context rejects new attributes: ``test_aio_request_id_via_contextvars``
"""

from __future__ import annotations

import inspect
from typing import Any

import grpc
import grpc.aio
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.server import ServerMetrics, current_request_id, server_interceptors
from octollm_grpc.server import aio as server_aio
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._limits import DETAILS_KEY, GENERIC_MESSAGE
from tests.server.harness import SHAPES, Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server

RID = ("x-request-id", "rid-pitfall")


def _handled(registry: CollectorRegistry, code: str, shape: str = "unary") -> float | None:
    method = {"unary": "Unary", "server_stream": "ServerStream",
              "client_stream": "ClientStream", "bidi_stream": "Bidi"}[shape]
    return registry.get_sample_value("grpc_server_handled_total", {
        "grpc_type": shape, "grpc_service": "test.Shapes", "grpc_method": method,
        "grpc_code": code})


def _abort(context: Any) -> None:
    context.abort(grpc.StatusCode.NOT_FOUND, "gone by the handler")


@pytest.mark.parametrize("shape", SHAPES)
def test_sync_abort_is_left_alone(shape: str) -> None:
    """Sync context.abort's bare Exception: the handler's code and message reach the client;
    the event names the error code the caller decodes the status to."""
    registry = CollectorRegistry()
    script = Script(before=_abort)
    with capture_logs() as logs, sync_server(
            sync_handlers(script), server_interceptors(metrics=ServerMetrics(registry))) as target:
        outcome = call_sync(target, shape, [RID])
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert outcome.error.details() == "gone by the handler"  # type: ignore[attr-defined]
    assert DETAILS_KEY not in outcome.trailers
    assert outcome.trailers["x-request-id"] == "rid-pitfall"
    assert [(x["log_level"], x["grpc_code"], x["error_code"]) for x in logs] == [
        ("warning", "NOT_FOUND", "NOT_FOUND")]
    assert _handled(registry, "NotFound", shape) == 1


async def _aio_abort(context: Any) -> None:
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now",
                        (("x-handler", "kept"),))


async def test_aio_abort_propagates_unchanged() -> None:
    """aio AbortError propagates: the handler's status and trailers reach the client as sent."""
    registry = CollectorRegistry()

    async def unary(request: bytes, context: Any) -> bytes:
        await _aio_abort(context)
        return b"unreachable"

    handlers = [grpc.method_handlers_generic_handler("test.Shapes", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary)})]
    with capture_logs() as logs:
        async with aio_server(handlers, server_aio.server_interceptors(
                metrics=ServerMetrics(registry))) as target:
            outcome = await call_aio(target, "unary", [RID])
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert outcome.error.details() == "not now"  # type: ignore[attr-defined]
    assert outcome.trailers["x-handler"] == "kept"
    assert DETAILS_KEY not in outcome.trailers
    assert [(x["log_level"], x["grpc_code"]) for x in logs] == [("warning", "FAILED_PRECONDITION")]
    assert _handled(registry, "FailedPrecondition") == 1


async def test_aio_abort_without_trailers_carries_request_id() -> None:
    """aio abort(code, details) keeps the request id trailer set before the handler ran."""

    async def unary(request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "nope")
        return b""

    handlers = [grpc.method_handlers_generic_handler("test.Shapes", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary)})]
    async with aio_server(handlers, server_aio.server_interceptors(metrics=False)) as target:
        outcome = await call_aio(target, "unary", [RID])
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert outcome.trailers["x-request-id"] == "rid-pitfall"


def _set_code_and_return(context: Any) -> None:
    context.set_code(grpc.StatusCode.ALREADY_EXISTS)
    context.set_details("exists")


def test_sync_set_code_and_return_is_left_alone() -> None:
    """Sync set_code + normal return: that status reaches the client, logged and counted once."""
    registry = CollectorRegistry()
    with capture_logs() as logs, sync_server(
            sync_handlers(Script(before=_set_code_and_return)),
            server_interceptors(metrics=ServerMetrics(registry))) as target:
        outcome = call_sync(target, "unary", [RID])
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
    assert outcome.error.details() == "exists"  # type: ignore[attr-defined]
    assert [(x["log_level"], x["grpc_code"]) for x in logs] == [("warning", "ALREADY_EXISTS")]
    assert _handled(registry, "AlreadyExists") == 1
    assert _handled(registry, "OK") == 0


def _set_code_only(context: Any) -> None:
    context.set_code(grpc.StatusCode.FAILED_PRECONDITION)


def test_sync_set_code_then_crash_keeps_code_hides_text() -> None:
    """Sync set_code then a crash: the handler's code stays, its text never reaches the wire."""
    script = Script(before=_set_code_only, error=lambda: RuntimeError("secret internals"))
    with capture_logs() as logs, sync_server(sync_handlers(script),
                                             server_interceptors(metrics=False)) as target:
        outcome = call_sync(target, "unary", [RID])
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert outcome.error.details() == GENERIC_MESSAGE  # type: ignore[attr-defined]
    assert "secret" not in repr(outcome.trailers)
    assert [x["log_level"] for x in logs] == ["critical"]
    assert isinstance(logs[0]["exc_info"], RuntimeError)


async def test_aio_set_code_then_crash_keeps_code_hides_text() -> None:
    """aio set_code then a crash: the handler's code stays, its text never reaches the wire."""
    script = Script(before=_set_code_only, error=lambda: RuntimeError("secret internals"))
    with capture_logs() as logs:
        async with aio_server(aio_handlers(script),
                              server_aio.server_interceptors(metrics=False)) as target:
            outcome = await call_aio(target, "unary", [RID])
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert outcome.error.details() == GENERIC_MESSAGE  # type: ignore[attr-defined]
    assert outcome.trailers["x-request-id"] == "rid-pitfall"
    assert [x["log_level"] for x in logs] == ["critical"]


def _set_trailers(context: Any) -> None:
    context.set_trailing_metadata((("x-handler", "kept"), ("x-trace-id", "t-1")))


@pytest.mark.parametrize("shape", SHAPES)
def test_sync_handler_trailers_are_kept(shape: str) -> None:
    """Sync: trailers the handler set survive our status (merged, not replaced), on error too."""
    script = Script(before=_set_trailers, error=lambda: e.TaskNotFoundError("t"))
    with sync_server(sync_handlers(script), server_interceptors(metrics=False)) as target:
        failed = call_sync(target, shape, [RID])
        script.error = None
        passed = call_sync(target, shape, [RID])
    for outcome in (failed, passed):
        assert outcome.trailers["x-handler"] == "kept"
        assert outcome.trailers["x-trace-id"] == "t-1"
        assert outcome.trailers["x-request-id"] == "rid-pitfall"
    assert failed.error is not None and DETAILS_KEY in failed.trailers
    assert from_rpc_error(failed.error) == e.TaskNotFoundError("t")


@pytest.mark.parametrize("shape", SHAPES)
async def test_aio_handler_trailers_are_kept(shape: str) -> None:
    """aio: trailers the handler set survive our status (merged, not replaced), on error too."""
    script = Script(before=_set_trailers, error=lambda: e.TaskNotFoundError("t"))
    async with aio_server(aio_handlers(script),
                          server_aio.server_interceptors(metrics=False)) as target:
        failed = await call_aio(target, shape, [RID])
        script.error = None
        passed = await call_aio(target, shape, [RID])
    for outcome in (failed, passed):
        assert outcome.trailers["x-handler"] == "kept"
        assert outcome.trailers["x-trace-id"] == "t-1"
        assert outcome.trailers["x-request-id"] == "rid-pitfall"
    assert failed.error is not None and DETAILS_KEY in failed.trailers
    assert from_rpc_error(failed.error) == e.TaskNotFoundError("t")


def test_sync_unregistered_method_passes_through() -> None:
    """Sync: an unknown method still gets UNIMPLEMENTED; nothing is logged or counted."""
    registry = CollectorRegistry()
    with capture_logs() as logs, sync_server(
            sync_handlers(Script()), server_interceptors(metrics=ServerMetrics(registry))) \
            as target, grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary("/test.Shapes/Missing")(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert logs == []
    assert registry.get_sample_value("grpc_server_started_total", {
        "grpc_type": "unary", "grpc_service": "test.Shapes", "grpc_method": "Missing"}) is None


async def test_aio_unregistered_method_passes_through() -> None:
    """aio: an unknown method still gets UNIMPLEMENTED; nothing is logged or counted."""
    registry = CollectorRegistry()
    with capture_logs() as logs:
        async with aio_server(aio_handlers(Script()), server_aio.server_interceptors(
                metrics=ServerMetrics(registry))) as target, \
                grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/test.Shapes/Missing")(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert logs == []
    assert registry.get_sample_value("grpc_server_started_total", {
        "grpc_type": "unary", "grpc_service": "test.Shapes", "grpc_method": "Missing"}) is None


async def test_aio_wrapper_keeps_kind() -> None:
    """aio: coroutine handlers stay coroutine functions, async generators stay generators."""
    interceptor = server_aio.server_interceptors(metrics=False)[0]
    by_method = {}
    for handler in aio_handlers(Script()):
        for name in ("Unary", "ServerStream", "ClientStream", "Bidi"):
            details = type("D", (), {"method": f"/test.Shapes/{name}",
                                     "invocation_metadata": ()})()

            async def continuation(d: Any, h: Any = handler) -> Any:
                return h.service(d)

            by_method[name] = await interceptor.intercept_service(continuation, details)
    assert inspect.iscoroutinefunction(by_method["Unary"].unary_unary)
    assert inspect.isasyncgenfunction(by_method["ServerStream"].unary_stream)
    assert inspect.iscoroutinefunction(by_method["ClientStream"].stream_unary)
    assert inspect.isasyncgenfunction(by_method["Bidi"].stream_stream)


async def test_aio_request_id_via_contextvars() -> None:
    """aio: the handler reads the call's request id from a contextvar, not a context attribute."""

    async def echo_id(request: bytes, context: Any) -> bytes:
        return (current_request_id() or "").encode()

    handlers = [grpc.method_handlers_generic_handler("test.Shapes", {
        "Unary": grpc.unary_unary_rpc_method_handler(echo_id)})]
    async with aio_server(handlers, server_aio.server_interceptors(metrics=False)) as target:
        outcome = await call_aio(target, "unary", [RID])
    assert outcome.messages == [b"rid-pitfall"]
    assert current_request_id() is None
