"""assert_rich_error says exactly what differs; servicer_handlers feeds generated stubs to serve."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from octollm_grpc import errors
from octollm_grpc.testing import FaultInjector, assert_rich_error, serve, servicer_handlers
from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.testing.service import UNARY, Echo, call

_C = grpc.StatusCode


@pytest.fixture
def not_found() -> grpc.RpcError:
    """A real NOT_FOUND / TASK_NOT_FOUND failure with task_id "task-404", off the wire."""
    with serve(Echo().handler()) as target, grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            call(channel, UNARY, b"missing")
    return caught.value


def test_a_matching_error_returns_the_decoded_typed_error(not_found: grpc.RpcError) -> None:
    """Code, error code and a detail match: the decoded TaskNotFoundError comes back."""
    error = assert_rich_error(not_found, _C.NOT_FOUND, "TASK_NOT_FOUND", task_id="task-404")
    assert isinstance(error, errors.TaskNotFoundError)
    assert error.message == "Task task-404 not found"
    assert assert_rich_error(error, _C.NOT_FOUND, None) is error  # a typed error is taken as is


@pytest.mark.parametrize(("code", "error_code", "details", "says"), [
    (_C.INVALID_ARGUMENT, "TASK_NOT_FOUND", {}, "code NOT_FOUND, expected INVALID_ARGUMENT"),
    (_C.NOT_FOUND, "VALIDATION_ERROR", {}, "error_code 'TASK_NOT_FOUND', expected"),
    (_C.NOT_FOUND, "TASK_NOT_FOUND", {"task_id": "x"}, "details['task_id'] == 'task-404'"),
    (_C.NOT_FOUND, "TASK_NOT_FOUND", {"owner": "x"}, "details['owner'] missing"),
])
def test_a_mismatch_names_what_differs(not_found: grpc.RpcError, code: grpc.StatusCode,
                                       error_code: str, details: dict[str, Any],
                                       says: str) -> None:
    """Each kind of mismatch raises AssertionError naming the field and both values."""
    with pytest.raises(AssertionError, match=f"^TaskNotFoundError .*{_escape(says)}"):
        assert_rich_error(not_found, code, error_code, **details)


def test_a_bare_status_or_a_non_grpc_exception_is_refused() -> None:
    """A call without grpc-status-details-bin, or an exception that is no RpcError, fails it."""
    injector = FaultInjector()
    injector.fail_next(1, _C.UNAVAILABLE)
    with serve(Echo().handler(), interceptors=[injector]) as target:
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
            call(channel, UNARY)
    with pytest.raises(AssertionError, match="no rich status"):
        assert_rich_error(caught.value, _C.UNAVAILABLE, None)
    with pytest.raises(AssertionError, match="expected a failed gRPC call"):
        assert_rich_error(ValueError("x"), _C.UNAVAILABLE, None)
    # An error the client raised itself carries no trailers and needs none.
    assert_rich_error(errors.CircuitOpenError("t", retry_after=3), _C.UNAVAILABLE, "CIRCUIT_OPEN")


class _Tasks(tasks_pb2_grpc.TaskServiceServicer):
    def GetTask(self, request: Any, context: Any) -> Any:
        raise errors.TaskNotFoundError(request.task_id)


def test_servicer_handlers_serves_a_generated_servicer() -> None:
    """The handlers generated add_*_to_server registers serve the servicer through serve()."""
    handlers = servicer_handlers(tasks_pb2_grpc.add_TaskServiceServicer_to_server, _Tasks())
    with serve(*handlers) as target, grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            tasks_pb2_grpc.TaskServiceStub(channel).GetTask(
                tasks_pb2.GetTaskRequest(task_id="t-9"), timeout=5)
    assert_rich_error(caught.value, _C.NOT_FOUND, "TASK_NOT_FOUND", task_id="t-9")
    with pytest.raises(ValueError, match="no generic handlers"):
        servicer_handlers(lambda servicer, server: None, _Tasks())


def _escape(text: str) -> str:
    import re

    return re.escape(text)
