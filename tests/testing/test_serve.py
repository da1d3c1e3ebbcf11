"""serve() and serve_aio_in_thread(): real servers with the octollm stack, stopped on exit."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest

from octollm_grpc.testing import assert_rich_error, serve, serve_aio_in_thread
from tests.testing.service import SERVICE, UNARY, Echo, aio_call, call

_C = grpc.StatusCode


def test_sync_serve_runs_the_stack_and_stops_on_exit() -> None:
    """A handler's TaskNotFoundError arrives as NOT_FOUND with details and a request id."""
    with serve(Echo().handler()) as target, grpc.insecure_channel(target) as channel:
        assert target.startswith("127.0.0.1:")
        with pytest.raises(grpc.RpcError) as caught:
            call(channel, UNARY, b"missing")
        error = assert_rich_error(caught.value, _C.NOT_FOUND, "TASK_NOT_FOUND",
                                  task_id="task-404")
        assert dict(caught.value.trailing_metadata())["x-request-id"] == error.request_id
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as after:
        call(channel, UNARY, timeout=5)
    assert after.value.code() is _C.UNAVAILABLE  # nothing listens there any more


async def test_aio_serve_is_an_async_context_manager_with_the_aio_stack() -> None:
    """serve(aio=True) runs a grpc.aio server on the test's loop, with the aio stack."""
    async with serve(Echo().handler(aio=True), aio=True) as target:
        async with grpc.aio.insecure_channel(target) as channel:
            assert await aio_call(channel, UNARY) == [b"hi"]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await aio_call(channel, UNARY, b"missing")
    assert_rich_error(caught.value, _C.NOT_FOUND, "TASK_NOT_FOUND", task_id="task-404")


def test_an_empty_stack_gives_a_bare_server() -> None:
    """stack=[]: no octollm interceptors, so grpcio's own UNKNOWN answers the exception."""
    with serve(Echo().handler(), stack=[]) as target, grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            call(channel, UNARY, b"missing")
    assert caught.value.code() is _C.UNKNOWN
    with pytest.raises(AssertionError, match="no rich status"):
        assert_rich_error(caught.value, _C.UNKNOWN, None)


def test_serve_aio_in_thread_serves_sync_callers() -> None:
    """An aio server on its own loop thread answers a sync client, and the thread ends."""
    before = {t.name for t in threading.enumerate()}
    with serve_aio_in_thread(Echo().handler(aio=True)) as target:
        assert "octollm-testing-aio" in {t.name for t in threading.enumerate()} - before
        with grpc.insecure_channel(target) as channel:
            assert call(channel, UNARY) == [b"hi"]
    assert "octollm-testing-aio" not in {t.name for t in threading.enumerate()} - before


def test_serve_aio_in_thread_reports_a_failure_to_start_in_the_caller() -> None:
    """An error while starting (here a foreign interceptor) is raised by the with statement."""
    with pytest.raises(ValueError, match="ServerInterceptor"), serve_aio_in_thread(
            Echo().handler(aio=True), interceptors=[object()]):
        pytest.fail("the server must not start")


def test_serve_aio_in_thread_ends_its_thread_before_reporting_a_failure_to_start() -> None:
    """The loop thread of a server that failed to start is gone when the error is raised."""
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match="ServerInterceptor"), serve_aio_in_thread(
            Echo().handler(aio=True), interceptors=[object()]):
        pytest.fail("the server must not start")
    assert [t.name for t in set(threading.enumerate()) - before
            if t.name == "octollm-testing-aio"] == []


def test_exit_does_not_wait_for_a_stuck_call_beyond_the_grace() -> None:
    """grace=0: exiting cancels a call still in its handler instead of waiting for it."""
    entered, release = threading.Event(), threading.Event()

    def stuck(request: bytes, context: Any) -> bytes:
        entered.set()
        release.wait(10)
        return request

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Unary": grpc.unary_unary_rpc_method_handler(stuck)})
    try:
        with serve(handler, grace=0) as target, grpc.insecure_channel(target) as channel:
            future = channel.unary_unary(UNARY).future(b"x", timeout=10)
            assert entered.wait(10)
        assert future.exception(10).code() in (_C.UNAVAILABLE, _C.CANCELLED)
    finally:
        release.set()
