"""The benchmark's servers do the work they claim, so its comparisons are honest."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from benchmarks import payload, procs

STACKS = ("sync", "aio")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[tuple[str, str], str]]:
    """One server process per (variant, stack) this file calls, as the benchmark starts them."""
    arg_sets = [(variant, stack) for variant in ("peer_full", "ours", "bare") for stack in STACKS]
    with procs.server_processes(procs.overhead_server_main, arg_sets) as handles:
        yield {args: handle.target for args, handle in zip(arg_sets, handles, strict=True)}


def _call(target: str, path: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        method = channel.unary_unary(path, request_serializer=payload.serialize,
                                     response_deserializer=payload.deserialize)
        with pytest.raises(grpc.RpcError) as caught:
            method(payload.task_message("task-42"), timeout=10, metadata=metadata)
    return caught.value


def _details(error: grpc.RpcError) -> dict[str, object]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, object] = {}
    for kind in (error_details_pb2.ErrorInfo, error_details_pb2.ResourceInfo,
                 error_details_pb2.RequestInfo, error_details_pb2.RetryInfo,
                 error_details_pb2.QuotaFailure):
        for packed in status.details:
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                found[kind.DESCRIPTOR.name] = message
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_equal_work_peer_sends_the_details_ours_sends(
    servers: dict[tuple[str, str], str], stack: str
) -> None:
    """peer_full answers NOT_FOUND with ErrorInfo, ResourceInfo and RequestInfo, as ours does."""
    sent = (("x-request-id", "rid-0042"),)
    for variant in ("peer_full", "ours"):
        error = _call(servers[(variant, stack)], payload.GET_MISSING_TASK_PATH, sent)
        assert error.code() is grpc.StatusCode.NOT_FOUND, variant
        assert error.details() == "Task task-42 not found", variant
        details = _details(error)
        info = details["ErrorInfo"]
        assert isinstance(info, error_details_pb2.ErrorInfo)
        assert (info.reason, info.domain, info.metadata["task_id"]) == (
            "TASK_NOT_FOUND", "octollm.grpc", "task-42"), variant
        resource = details["ResourceInfo"]
        assert isinstance(resource, error_details_pb2.ResourceInfo)
        assert resource.resource_name == "task-42", variant
        request = details["RequestInfo"]
        assert isinstance(request, error_details_pb2.RequestInfo)
        assert request.request_id == "rid-0042", variant
        assert ("x-request-id", "rid-0042") in tuple(error.trailing_metadata() or ()), variant


@pytest.mark.parametrize("stack", STACKS)
def test_rejection_scenario_refuses_every_call_on_both_servers(
    servers: dict[tuple[str, str], str], stack: str
) -> None:
    """The throttled method ends RESOURCE_EXHAUSTED: bare by abort, ours by its rate limiter
    (with RetryInfo and QuotaFailure), from the first call on."""
    for _ in range(3):
        bare = _call(servers[("bare", stack)], payload.GET_THROTTLED_TASK_PATH)
        assert bare.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        ours = _call(servers[("ours", stack)], payload.GET_THROTTLED_TASK_PATH)
        assert ours.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ours.details() == bare.details() == "Rate limit exceeded: 1 requests per 3600s"
        details = _details(ours)
        assert details["ErrorInfo"].reason == "RATE_LIMIT_EXCEEDED"  # type: ignore[attr-defined]
        assert {"RetryInfo", "QuotaFailure"} <= details.keys()
