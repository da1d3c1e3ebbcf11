"""to_status and to_status_proto return a status for any Exception, hostile ones included."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc import errors as e
from octollm_grpc.status import to_status
from octollm_grpc.status._encode import to_status_proto
from octollm_grpc.status._limits import DETAILS_KEY, GENERIC_MESSAGE


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("password=hunter2")

    def __repr__(self) -> str:
        raise RuntimeError("password=hunter2")


class _BadCode(str):
    def __str__(self) -> str:
        raise RuntimeError("password=hunter2")


def _hostile_message() -> e.OctoLLMError:
    error = e.CacheError("placeholder")
    error.message = _Unprintable()  # type: ignore[assignment]
    return error


def _hostile_detail() -> e.OctoLLMError:
    return e.OctoLLMError("fine message", details={"key": _Unprintable(),
                                                   "nested": [_Unprintable()]})


def _hostile_detail_key() -> e.OctoLLMError:
    return e.OctoLLMError("fine message", details={_Unprintable(): 1})  # type: ignore[dict-item]


def _hostile_code() -> e.OctoLLMError:
    error = e.OctoLLMError("fine message")
    error.error_code = _BadCode("X")
    return error


HOSTILE = [_hostile_message, _hostile_detail, _hostile_detail_key, _hostile_code]


def _proto(status: Any) -> status_pb2.Status:
    raw = dict(status.trailing_metadata)[DETAILS_KEY]
    return status_pb2.Status.FromString(raw)


@pytest.mark.parametrize("make", HOSTILE)
def test_hostile_error_gives_a_status_without_its_text(make: Any) -> None:
    """A hostile __str__ anywhere in an error gives a status; no secret reaches the wire."""
    status = to_status(make(), request_id="r-1")
    assert status.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    proto = _proto(status)
    assert proto.code == status.code.value[0]
    assert "hunter2" not in proto.SerializeToString().decode("latin-1")
    assert "hunter2" not in status.details
    info = error_details_pb2.RequestInfo()
    assert any(d.Unpack(info) for d in proto.details if d.Is(info.DESCRIPTOR))
    assert info.request_id == "r-1"


def test_unrenderable_message_is_the_generic_internal_status() -> None:
    """An error whose message cannot be rendered is sent as an unexpected exception."""
    status = to_status(_hostile_message())
    assert status.code is grpc.StatusCode.INTERNAL
    assert status.details == GENERIC_MESSAGE
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in _proto(status).details if d.Is(info.DESCRIPTOR))
    assert info.reason == "INTERNAL_ERROR"


@pytest.mark.parametrize("make", HOSTILE)
def test_to_status_proto_is_total_too(make: Any) -> None:
    """to_status_proto (batch items) never raises for a hostile error either."""
    proto = to_status_proto(make())
    assert proto.code in (grpc.StatusCode.INTERNAL.value[0], grpc.StatusCode.UNKNOWN.value[0])
    assert "hunter2" not in proto.SerializeToString().decode("latin-1")
