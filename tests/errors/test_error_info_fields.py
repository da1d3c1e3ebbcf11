"""error.reason, error.domain and error.metadata: ErrorInfo's fields on every decoded error
(as google-api-core exposes them) and, on a raised one, what would be sent."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc import errors as e
from octollm_grpc import from_rpc_error, to_status
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.status._limits import DEFAULT_DOMAIN
from tests.server.harness import Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server


def _sent_info(error: e.OctoLLMError, domain: str = DEFAULT_DOMAIN) -> error_details_pb2.ErrorInfo:
    status = to_status(error, domain=domain)
    info = error_details_pb2.ErrorInfo()
    assert status.proto.details[0].Unpack(info)
    return info


@pytest.mark.parametrize("error", [
    e.ValidationError("bad", details={"field": "name", "attempts": 3, "ok": False,
                                      "nested": {"a": 1}, "none": None}),
    e.TaskNotFoundError("t-9"),
    e.RateLimitError(limit=5, window=60, retry_after=2),
    e.OctoLLMError("plain"),
], ids=["validation", "task", "rate", "base"])
def test_a_raised_error_answers_what_would_be_sent(error: e.OctoLLMError) -> None:
    """reason = error_code, the library's domain, metadata = ErrorInfo.metadata as encoded."""
    info = _sent_info(error)
    assert error.reason == error.error_code == info.reason
    assert error.domain == DEFAULT_DOMAIN == info.domain == "octollm.grpc"
    assert error.metadata == dict(info.metadata)


def test_metadata_is_a_fresh_copy() -> None:
    """Changing the returned dict changes neither the error nor a later read."""
    error = e.TaskNotFoundError("t-1")
    error.metadata["task_id"] = "other"
    assert error.metadata == {"task_id": "t-1"}


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: Any) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailers


def test_a_decoded_error_answers_the_received_error_info() -> None:
    """The received reason, domain (another service's) and metadata, not local defaults."""
    status = to_status(e.TaskNotFoundError("t-4"), domain="billing.acme.example")
    decoded = from_rpc_error(_Failed(status.code, status.details, status.trailing_metadata))
    assert decoded.reason == "TASK_NOT_FOUND"
    assert decoded.domain == "billing.acme.example"
    assert decoded.metadata == {"task_id": "t-4"}


def test_a_decoded_error_without_error_info_has_none() -> None:
    """A bare status (no details): reason and domain None, metadata empty."""
    decoded = from_rpc_error(_Failed(grpc.StatusCode.UNAVAILABLE, "down", ()))
    assert type(decoded) is e.NetworkError
    assert (decoded.reason, decoded.domain, decoded.metadata) == (None, None, {})


def test_a_decoded_error_keeps_metadata_the_details_do_not_show() -> None:
    """An unknown reason and metadata keys decode as received, whatever the class."""
    info = error_details_pb2.ErrorInfo(reason="QUOTA_GONE", domain="quota.example",
                                       metadata={"project": "p1", "limit": "5"})
    packed = any_pb2.Any()
    packed.Pack(info)
    proto = status_pb2.Status(code=8, message="quota", details=[packed])
    trailers = (("grpc-status-details-bin", proto.SerializeToString()),)
    decoded = from_rpc_error(_Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", trailers))
    assert (decoded.reason, decoded.domain) == ("QUOTA_GONE", "quota.example")
    assert decoded.metadata == {"project": "p1", "limit": "5"}


def _check_wire(outcome: Any) -> None:
    decoded = from_rpc_error(outcome.error)
    assert type(decoded) is e.TaskNotFoundError
    assert (decoded.reason, decoded.domain, decoded.metadata) == (
        "TASK_NOT_FOUND", "tasks.example", {"task_id": "t-77"})


def test_sync_server_error_info_reaches_the_client() -> None:
    """Through a real sync server with its own domain: the client reads the three fields."""
    script = Script(error=lambda: e.TaskNotFoundError("t-77"))
    with sync_server(sync_handlers(script), server_interceptors(domain="tasks.example")) as t:
        _check_wire(call_sync(t, "unary"))


async def test_aio_server_error_info_reaches_the_client() -> None:
    """The same through a real aio server."""
    script = Script(error=lambda: e.TaskNotFoundError("t-77"))
    async with aio_server(aio_handlers(script),
                          server_aio.server_interceptors(domain="tasks.example")) as target:
        _check_wire(await call_aio(target, "server_stream"))


def test_a_class_that_names_its_domain_answers_it() -> None:
    """A class with its own ``domain`` (declared in protos) answers and sends that domain."""

    class Declared(e.NotFoundError):
        error_code = "TEST_DECLARED_DOMAIN"
        domain = "orders.acme.example"

    error = Declared("o-1")
    assert error.domain == _sent_info(error).domain == "orders.acme.example"
