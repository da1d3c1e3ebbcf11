"""The benchmark's servers do the work they claim, so its comparisons are honest."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import payload, procs

STACKS = ("sync", "aio")


@pytest.fixture(scope="module")
def handles() -> Iterator[dict[tuple[str, str], procs.ServerHandle]]:
    """One server process per (variant, stack) this file calls, as the benchmark starts them."""
    arg_sets = [(variant, stack) for variant in ("peer_full", "ours", "bare") for stack in STACKS]
    with procs.server_processes(procs.overhead_server_main, arg_sets) as started:
        yield dict(zip(arg_sets, started, strict=True))


@pytest.fixture(scope="module")
def servers(
    handles: dict[tuple[str, str], procs.ServerHandle],
) -> dict[tuple[str, str], str]:
    """The target of each server process."""
    return {args: handle.target for args, handle in handles.items()}


def _call(target: str, path: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        method = channel.unary_unary(path, request_serializer=payload.serialize,
                                     response_deserializer=payload.deserialize)
        with pytest.raises(grpc.RpcError) as caught:
            method(payload.task_message("task-42"), timeout=10, metadata=metadata)
    return caught.value


def _succeed(target: str, metadata: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    with grpc.insecure_channel(target) as channel:
        method = channel.unary_unary(payload.GET_TASK_PATH, request_serializer=payload.serialize,
                                     response_deserializer=payload.deserialize)
        _, call = method.with_call(payload.task_message("task-42"), timeout=10,
                                   metadata=metadata)
    return dict(call.trailing_metadata() or ())


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(handle: procs.ServerHandle) -> Samples:
    """Every sample of the server's call metrics (not the process collector's) except
    histogram buckets (which bucket a duration lands in is timing) and creation stamps."""
    text = handle.request("metrics")
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_created")) or \
                    not sample.name.startswith(("grpc_", "octollm_")):
                continue
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _changed(before: Samples, after: Samples) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                      float]:
    """The samples a call moved: counts by how much; sums (durations) as 1.0 when they grew."""
    moved = {}
    for key, value in after.items():
        delta = value - before.get(key, 0.0)
        if delta:
            moved[key] = 1.0 if key[0].endswith("_sum") else delta
    return moved


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


@pytest.mark.parametrize("stack", STACKS)
def test_equal_work_peer_moves_the_metrics_ours_moves(
    handles: dict[tuple[str, str], procs.ServerHandle], stack: str
) -> None:
    """A successful and a failed call move the same metric samples on peer_full as on ours."""
    moved = {}
    for variant in ("peer_full", "ours"):
        handle = handles[(variant, stack)]
        before = _samples(handle)
        _succeed(handle.target)
        _call(handle.target, payload.GET_MISSING_TASK_PATH)
        moved[variant] = _changed(before, _samples(handle))
    labels = (("grpc_method", "GetTask"), ("grpc_service", payload.SERVICE),
              ("grpc_type", "unary"))
    missing = (("grpc_method", "GetMissingTask"), ("grpc_service", payload.SERVICE),
               ("grpc_type", "unary"))
    expected = {
        ("grpc_server_started_total", labels): 1.0,
        ("grpc_server_started_total", missing): 1.0,
        ("grpc_server_handled_total", (("grpc_code", "OK"), *labels)): 1.0,
        ("grpc_server_handled_total", (("grpc_code", "NotFound"), *missing)): 1.0,
        ("grpc_server_handling_seconds_count", labels): 1.0,
        ("grpc_server_handling_seconds_sum", labels): 1.0,
        ("grpc_server_handling_seconds_count", missing): 1.0,
        ("grpc_server_handling_seconds_sum", missing): 1.0,
        ("octollm_errors_total", (("component", "grpc_server"),
                                  ("error_type", "TASK_NOT_FOUND"))): 1.0,
        ("octollm_error_duration_seconds_count", (("error_type", "TASK_NOT_FOUND"),)): 1.0,
        ("octollm_error_duration_seconds_sum", (("error_type", "TASK_NOT_FOUND"),)): 1.0,
    }
    assert moved["ours"] == expected
    assert moved["peer_full"] == expected


@pytest.mark.parametrize("stack", STACKS)
def test_equal_work_peer_sends_a_request_id_on_success_as_ours_does(
    servers: dict[tuple[str, str], str], stack: str
) -> None:
    """On success peer_full, like ours, echoes x-request-id or sends a new 32-character one."""
    for variant in ("peer_full", "ours"):
        target = servers[(variant, stack)]
        assert _succeed(target, (("x-request-id", "rid-7"),))["x-request-id"] == "rid-7"
        made = _succeed(target)["x-request-id"]
        assert len(made) == 32 and int(made, 16) >= 0, variant
