"""Injected internal failures in every RPC: nothing of the exception reaches the wire.

The real service runs with its storage sabotaged (:mod:`tests.reliability.faulty_service`):
each failure's message holds a secret and a file path. Every RPC is called from Python (the
status message, every trailer, the decoded rich status, batch item statuses) and through
grpcurl (its whole output); none may show the secret, the path, the exception's type name, a
traceback or a source file. ``DebugInfo`` appears only with ``--dev``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2

from octollm_grpc.status._limits import DETAILS_KEY, GENERIC_MESSAGE
from server.gen.octollm.tasks.v1 import tasks_pb2
from tests.reliability.faulty_service import SECRET, SECRET_PATH
from tests.reliability.support import SERVICE, health_ok, service
from tests.service.harness import RunningService

#: Every RPC of the sample service with a valid request (so the call reaches storage).
RPCS: dict[str, tuple[Message, type[Message], bool]] = {
    "CreateTask": (tasks_pb2.CreateTaskRequest(description="leak probe", request_id="k1"),
                   tasks_pb2.CreateTaskResponse, False),
    "GetTask": (tasks_pb2.GetTaskRequest(task_id="t-1"), tasks_pb2.GetTaskResponse, False),
    "ListTasks": (tasks_pb2.ListTasksRequest(), tasks_pb2.ListTasksResponse, False),
    "CancelTask": (tasks_pb2.CancelTaskRequest(task_id="t-1"), tasks_pb2.CancelTaskResponse,
                   False),
    "DeleteTask": (tasks_pb2.DeleteTaskRequest(task_id="t-1"), tasks_pb2.DeleteTaskResponse,
                   False),
    "ExecuteTask": (tasks_pb2.ExecuteTaskRequest(task_id="t-1"),
                    tasks_pb2.ExecuteTaskResponse, False),
    "ExecuteBatch": (tasks_pb2.ExecuteBatchRequest(task_ids=["t-1", "t-2"]),
                     tasks_pb2.ExecuteBatchResponse, False),
    "WatchTask": (tasks_pb2.WatchTaskRequest(task_id="t-1"), tasks_pb2.WatchTaskResponse, True),
}

#: What must never be on the wire: the secret, the path, type names, tracebacks, sources.
FORBIDDEN = (SECRET, SECRET_PATH, "/srv/", "RuntimeError", "OSError", "PermissionError",
             "KeyError", "OperationalError", "Traceback", 'File "', ".py",
             "Permission denied", "disk I/O")
DEBUG_INFO = "type.googleapis.com/google.rpc.DebugInfo"


@dataclass
class Seen:
    """What one call showed a Python client."""

    code: grpc.StatusCode
    message: str
    trailers: tuple[tuple[str, Any], ...]
    statuses: list[status_pb2.Status]  # the call's rich status, and batch items' statuses

    def wire_text(self) -> str:
        """All of it as text: message, every trailer (raw), every status as decoded JSON."""
        parts = [self.message]
        for key, value in self.trailers:
            parts.append(f"{key}={value!r}")
            if isinstance(value, bytes):
                parts.append(value.decode("utf-8", "replace"))
        parts += [json_format.MessageToJson(s) for s in self.statuses]
        return "\n".join(parts)

    def detail_types(self) -> set[str]:
        """Type URLs of every detail in every status."""
        return {d.type_url for s in self.statuses for d in s.details}


def _call(channel: grpc.Channel, rpc: str) -> Seen:
    request, response_type, streaming = RPCS[rpc]
    method = f"/{SERVICE}/{rpc}"
    encode = type(request).SerializeToString
    statuses: list[status_pb2.Status] = []
    try:
        if streaming:
            stream = channel.unary_stream(method, request_serializer=encode,
                                          response_deserializer=response_type.FromString)
            list(stream(request, timeout=10))
            code, message, trailers = grpc.StatusCode.OK, "", ()
        else:
            unary = channel.unary_unary(method, request_serializer=encode,
                                        response_deserializer=response_type.FromString)
            response, call = unary.with_call(request, timeout=10)
            code, message, trailers = grpc.StatusCode.OK, "", tuple(call.trailing_metadata())
            statuses += [r.error for r in getattr(response, "results", ()) if r.HasField("error")]
    except grpc.RpcError as error:
        code, message = error.code(), error.details() or ""  # type: ignore[attr-defined]
        trailers = tuple(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    for key, value in trailers:
        if key == DETAILS_KEY:
            statuses.append(status_pb2.Status.FromString(value))
    return Seen(code, message, trailers, statuses)


def _assert_clean(text: str, where: str) -> None:
    found = [word for word in FORBIDDEN if word.lower() in text.lower()]
    assert not found, f"{where} leaks {found}:\n{text}"


@pytest.fixture(scope="module", params=["runtime", "oserror", "keyerror", "sqlite"])
def faulty(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RunningService]]:
    kind: str = request.param
    with service(tmp_path_factory.mktemp(f"leak-{kind}"), module="tests.reliability.faulty_service",
                 env={"OCTOLLM_TEST_FAULT": kind}) as running:
        yield kind, running


def test_no_internal_failure_text_reaches_a_python_client(
        faulty: tuple[str, RunningService]) -> None:
    """Every RPC over failing storage: INTERNAL, a generic or fixed message, nothing leaked."""
    kind, running = faulty
    with grpc.insecure_channel(running.target) as channel:
        seen = {rpc: _call(channel, rpc) for rpc in RPCS}
    for rpc, outcome in seen.items():
        _assert_clean(outcome.wire_text(), f"{kind}/{rpc}")
        assert DEBUG_INFO not in outcome.detail_types(), rpc
        if rpc == "ExecuteBatch":
            # Partial success: the call is OK, each item carries its own (clean) status.
            assert outcome.code is grpc.StatusCode.OK
            assert [s.code for s in outcome.statuses] == [grpc.StatusCode.INTERNAL.value[0]] * 2
            expected = ("Database query failed: SQLITE_IOERR" if kind == "sqlite"
                        else GENERIC_MESSAGE)
            assert {s.message for s in outcome.statuses} == {expected}
        else:
            assert outcome.code is grpc.StatusCode.INTERNAL, (rpc, outcome)
            assert outcome.statuses, f"{rpc}: no rich status"
            if kind != "sqlite":
                assert outcome.message == GENERIC_MESSAGE, (rpc, outcome)
    logs = running.logs()
    assert SECRET in logs  # the failures really happened, and went to the log only
    assert health_ok(running.target)


def test_no_internal_failure_text_reaches_grpcurl(faulty: tuple[str, RunningService]) -> None:
    """grpcurl's whole output (status JSON with decoded details) holds nothing of the failure."""
    kind, running = faulty
    for rpc, (request, _, _) in RPCS.items():
        done = running.call(rpc, json_format.MessageToDict(request))
        _assert_clean(done.stdout + done.stderr, f"grpcurl {kind}/{rpc}")
        if rpc != "ExecuteBatch":
            assert done.returncode == 64 + grpc.StatusCode.INTERNAL.value[0], done.stderr


def test_debug_info_only_in_development_mode(tmp_path: Path) -> None:
    """With --dev an unexpected failure carries DebugInfo (its traceback); without, never."""
    with service(tmp_path, "--dev", module="tests.reliability.faulty_service",
                 env={"OCTOLLM_TEST_FAULT": "runtime"}) as running:
        with grpc.insecure_channel(running.target) as channel:
            seen = _call(channel, "GetTask")
            batch = _call(channel, "ExecuteBatch")
    assert seen.code is grpc.StatusCode.INTERNAL
    assert seen.message == GENERIC_MESSAGE  # the message stays generic even in --dev
    assert DEBUG_INFO in seen.detail_types()
    assert "RuntimeError" in seen.wire_text() and SECRET in seen.wire_text()
    assert DEBUG_INFO in batch.detail_types()
