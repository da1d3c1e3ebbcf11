"""Error values compare and hash by value, messages count right, and a foreign BadRequest keeps
its reasons when decoded."""

from __future__ import annotations

import pickle
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc import errors as e
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._decode import from_status_proto
from octollm_grpc.status._limits import DETAILS_KEY


def test_equal_errors_hash_equal() -> None:
    """OctoLLMError compares by value, so equal errors hash equal (sets and dicts agree)."""
    a = e.TaskNotFoundError("task-1")
    b = pickle.loads(pickle.dumps(a))
    assert a == b and a is not b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert {a: "first"}[b] == "first"
    assert e.RateLimitError(limit=1, window=1, retry_after=2) in {
        e.RateLimitError(limit=1, window=1, retry_after=2.0)}


def test_singular_validation_message() -> None:
    """'Validation failed with 1 error', not '1 errors'; plural otherwise."""
    assert e.ValidationErrors([{"field": "a", "message": "m"}]).message == (
        "Validation failed with 1 error")
    assert e.ValidationErrors([{"field": "a", "message": "m"}] * 2).message == (
        "Validation failed with 2 errors")


class _Failed(grpc.RpcError):
    def __init__(self, status: status_pb2.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.INVALID_ARGUMENT

    def details(self) -> str:
        return self._status.message

    def trailing_metadata(self) -> Any:
        return ((DETAILS_KEY, self._status.SerializeToString()),)


def test_field_violation_reason_is_kept_without_an_envelope() -> None:
    """A foreign BadRequest (no envelope of ours): each violation keeps its reason."""
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(
            field="priority", description="priority must be between 1 and 10",
            reason="OUT_OF_RANGE"),
        error_details_pb2.BadRequest.FieldViolation(field="name", description="required"),
    ])
    status = status_pb2.Status(code=3, message="bad request", details=[any_pb2.Any(
        type_url="type.googleapis.com/google.rpc.BadRequest", value=bad.SerializeToString())])
    for decoded in (from_rpc_error(_Failed(status)), from_status_proto(status)):
        assert decoded.details["errors"] == [
            {"field": "priority", "message": "priority must be between 1 and 10",
             "reason": "OUT_OF_RANGE"},
            {"field": "name", "message": "required"},
        ]
