"""Bad input against the running sample service: generated and hand-picked.

Random and oversize field values (hypothesis, with an oracle of the service's rules), random
bytes as request messages (unknown fields, broken wire format, invalid UTF-8), messages over
the size limit, huge metadata, binary and invalid UTF-8 in text metadata (sent by grpcurl, as
grpcio refuses to), malformed ``x-request-id`` and ``authorization``. Each gets a clear error
with the right code, never ``INTERNAL``/``UNKNOWN`` or a parser's words, and the service keeps
serving: every test ends with a health check on a process still running.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octollm_grpc import errors
from octollm_grpc.server import Violations
from octollm_grpc.status import from_rpc_error
from server.gen.octollm.tasks.v1 import tasks_pb2
from server.validation import MAX_DESCRIPTION, MAX_REQUEST_ID
from tests.reliability.support import SERVICE, health_ok, service, sync_server, task_stub
from tests.service.harness import GRPCURL, RunningService

_C = grpc.StatusCode
NEVER = {_C.INTERNAL, _C.UNKNOWN, _C.UNAVAILABLE, _C.DATA_LOSS}
HEX_ID = re.compile(r"^[0-9a-f]{32}$")
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
#: Words of a parser or an exception that must not reach a client.
PARSER_WORDS = ("DecodeError", "<class", "Traceback", "google.protobuf", "Error parsing")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Rate limiting off: hundreds of quick calls here test parsing, not the limiter.
    with service(tmp_path_factory.mktemp("bad-input"), "--rate-limit", "0") as running:
        yield running.target
        assert running.process.poll() is None, "the service died"
        assert health_ok(running.target)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with service(tmp_path_factory.mktemp("bad-metadata"), "--rate-limit", "0") as process:
        yield process


def _outcome(call: Any) -> tuple[_C, str, Any]:
    try:
        return _C.OK, "", call()
    except grpc.RpcError as error:
        failed: Any = error
    message = failed.details() or ""
    assert not any(w in message for w in PARSER_WORDS), message
    return failed.code(), message, failed


def _violated(request: tasks_pb2.CreateTaskRequest) -> set[str]:
    """The oracle: which fields break the service's documented rules."""
    bad = set()
    text = request.description
    if not text.strip() or len(text) > MAX_DESCRIPTION:
        bad.add("description")
    if request.HasField("priority") and not 1 <= request.priority <= 10:
        bad.add("priority")
    if request.HasField("timeout_seconds") and request.timeout_seconds <= 0:
        bad.add("timeout_seconds")
    if len(request.request_id) > MAX_REQUEST_ID:
        bad.add("request_id")
    return bad


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_INT32 = st.integers(-(2**31), 2**31 - 1)
_DESCRIPTIONS = st.one_of(
    _TEXT,
    st.sampled_from(["", " ", "\t\n", "\u3000", "\x00", "ok"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "\u00e9", "\U0001f600", " "]),
              st.integers(MAX_DESCRIPTION - 2, MAX_DESCRIPTION + 2)))
_REQUEST_IDS = st.one_of(_TEXT, st.builds(lambda n: "r" * n,
                                          st.integers(MAX_REQUEST_ID - 1, MAX_REQUEST_ID + 1)))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(description=_DESCRIPTIONS, priority=st.none() | _INT32,
       timeout=st.none() | _INT32, request_id=_REQUEST_IDS)
def test_generated_create_requests_follow_the_rules(
        target: str, description: str, priority: int | None, timeout: int | None,
        request_id: str) -> None:
    """Random field values: OK exactly when valid, else INVALID_ARGUMENT naming each bad field."""
    request = tasks_pb2.CreateTaskRequest(description=description, request_id=request_id)
    if priority is not None:
        request.priority = priority
    if timeout is not None:
        request.timeout_seconds = timeout
    with grpc.insecure_channel(target) as channel:
        code, _, error = _outcome(lambda: task_stub(channel).CreateTask(request, timeout=10))
    expected = _violated(request)
    if not expected:
        assert code is _C.OK, (code, request)
        return
    assert code is _C.INVALID_ARGUMENT, (code, request)
    typed = from_rpc_error(error)
    assert isinstance(typed, errors.ValidationErrors)
    assert {e["field"] for e in typed.errors} == expected


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rpc=st.sampled_from(["CreateTask", "GetTask", "ListTasks", "CancelTask", "DeleteTask",
                            "ExecuteTask", "ExecuteBatch", "WatchTask"]),
       payload=st.binary(max_size=300))
def test_random_bytes_as_request_messages(target: str, rpc: str, payload: bytes) -> None:
    """Any bytes as a request: parsed (unknown fields ignored) or INVALID_ARGUMENT, no crash."""
    method = f"/{SERVICE}/{rpc}"
    with grpc.insecure_channel(target) as channel:
        if rpc == "WatchTask":
            code, message, _ = _outcome(
                lambda: list(channel.unary_stream(method)(payload, timeout=2)))
            # A watch of a task that exists but never finishes runs out of time: fine.
            allowed = {_C.OK, _C.INVALID_ARGUMENT, _C.NOT_FOUND, _C.DEADLINE_EXCEEDED}
        else:
            code, message, _ = _outcome(lambda: channel.unary_unary(method)(payload, timeout=10))
            allowed = {_C.OK, _C.INVALID_ARGUMENT, _C.NOT_FOUND, _C.FAILED_PRECONDITION}
    assert code in allowed, (rpc, payload, code, message)


def _raw(target: str, rpc: str, payload: bytes, **kwargs: Any) -> tuple[_C, str, Any]:
    with grpc.insecure_channel(target) as channel:
        return _outcome(lambda: channel.unary_unary(f"/{SERVICE}/{rpc}")(payload, timeout=10,
                                                                          **kwargs))


def test_hand_picked_messages(target: str) -> None:
    """Unknown fields pass; broken wire format, bad UTF-8: INVALID_ARGUMENT; > 4 MiB refused."""
    valid = tasks_pb2.CreateTaskRequest(description="ok").SerializeToString()
    unknown_fields = valid + b"\xb8\x3e\x01" + b"\xc2\x3e\x03abc"  # fields 999 and 1000
    cases = {
        "unknown_fields": (unknown_fields, _C.OK),
        "bad_utf8_string": (b"\x0a\x02\xff\xfe", _C.INVALID_ARGUMENT),
        "truncated": (valid[:-1], _C.INVALID_ARGUMENT),
        "bad_tag": (b"\xff\xff\xff\xff", _C.INVALID_ARGUMENT),
        "oversize_field": (tasks_pb2.CreateTaskRequest(
            description="x" * (MAX_DESCRIPTION + 1)).SerializeToString(), _C.INVALID_ARGUMENT),
        "over_size_limit": (tasks_pb2.CreateTaskRequest(
            description="x" * (5 << 20)).SerializeToString(), _C.RESOURCE_EXHAUSTED),
    }
    seen = {name: _raw(target, "CreateTask", payload) for name, (payload, _) in cases.items()}
    assert {n: s[0] for n, s in seen.items()} == {n: c for n, (_, c) in cases.items()}
    assert seen["bad_utf8_string"][1] == "The request message could not be parsed"
    assert health_ok(target)


def test_huge_and_many_metadata_are_refused(target: str) -> None:
    """Metadata over gRPC's 16 KiB limit: RESOURCE_EXHAUSTED; just under 8 KiB: served."""
    listing = tasks_pb2.ListTasksRequest().SerializeToString()
    cases = {
        "big_value": ([("x-big", "a" * 20_000)], _C.RESOURCE_EXHAUSTED),
        "many_keys": ([(f"x-k{i}", "v" * 100) for i in range(300)], _C.RESOURCE_EXHAUSTED),
        "big_bin": ([("x-blob-bin", b"\x00\xff" * 10_000)], _C.RESOURCE_EXHAUSTED),
        "under_limit": ([("x-fine", "a" * 6_000)], _C.OK),
    }
    seen = {name: _raw(target, "ListTasks", listing, metadata=md)[0]
            for name, (md, _) in cases.items()}
    assert seen == {name: code for name, (_, code) in cases.items()}
    assert health_ok(target)


@pytest.mark.parametrize(("rid", "kept"), [
    ("req-123", True), ("a" * 128, True), ("a" * 129, False), ("", False), ("a b", True),
])
def test_malformed_request_id_is_replaced(target: str, rid: str, kept: bool) -> None:
    """A sane x-request-id is echoed; a too long or empty one is replaced by a fresh 32-hex id."""
    with grpc.insecure_channel(target) as channel:
        _, call = task_stub(channel).ListTasks.with_call(
            tasks_pb2.ListTasksRequest(), timeout=10, metadata=[("x-request-id", rid)])
    echoed = dict(call.trailing_metadata())["x-request-id"]
    assert (echoed == rid) if kept else HEX_ID.match(echoed)


#: Raw header lines grpcurl sends as they are (grpcio refuses to send any of these).
RAW_HEADERS = [
    b"x-request-id: \xff\xfe\xfd",  # invalid UTF-8
    b"x-request-id: abc\x01def",  # a control character (log-line forging)
    b"x-request-id: caf\xc3\xa9",  # valid UTF-8, not ASCII
    b"x-custom: \xc3\x28",  # invalid UTF-8 in any text key
    b"x-custom: \x7f\x80\x81",  # DEL and bytes no UTF-8 text starts with
    b"authorization: Bearer \xff\xfe",
    b"authorization: \xc3\x28",
    b"grpc-timeout: banana",  # a reserved header, malformed
    b"x-bytes-bin: !!!not-base64!!!",  # a binary key whose value is not base64
]


def _grpcurl(running: RunningService, header: bytes) -> subprocess.CompletedProcess[bytes]:
    argv = [str(GRPCURL).encode(), b"-plaintext", b"-format-error", b"-v", b"-H", header,
            b"-d", b"{}", running.target.encode(), f"{SERVICE}/ListTasks".encode()]
    return subprocess.run(argv, capture_output=True, timeout=30, check=False)


@pytest.mark.parametrize("header", RAW_HEADERS, ids=range(len(RAW_HEADERS)))
def test_binary_and_invalid_utf8_in_text_metadata(running: RunningService,
                                                  header: bytes) -> None:
    """Raw bytes in text metadata: served or refused cleanly; an insane request id is replaced."""
    done = _grpcurl(running, header)
    out = done.stdout + done.stderr
    # grpcurl exits 0, or 64 + a clear client-side code; never INTERNAL/UNKNOWN from the server.
    assert done.returncode in (0, 64 + _C.INVALID_ARGUMENT.value[0]), out
    if header.startswith(b"x-request-id") and done.returncode == 0:
        trailer = re.search(rb"x-request-id: (\S+)", out.split(b"Response trailers")[-1])
        assert trailer is not None and HEX_ID.match(trailer.group(1).decode()), out
    assert running.process.poll() is None
    assert health_ok(running.target)
    logs = running.logs()
    assert "\x01" not in logs  # nothing that could forge a log line


def test_malformed_authorization_on_a_guarded_server(tmp_path: Path) -> None:
    """Auth on: raw-byte authorization headers are UNAUTHENTICATED, the server keeps serving."""
    with service(tmp_path, "--auth-token", "tok-good-1") as guarded:
        codes = {header: _grpcurl(guarded, header).returncode
                 for header in RAW_HEADERS if header.startswith(b"authorization")}
        assert health_ok(guarded.target)
    assert set(codes.values()) == {64 + _C.UNAUTHENTICATED.value[0]}, codes


def test_sync_stack_maps_undecodable_requests_too() -> None:
    """The fix holds on grpc.server as well: bad bytes are INVALID_ARGUMENT, not INTERNAL."""
    from octollm_grpc.server import server_interceptors

    def echo(request: error_details_pb2.ErrorInfo, context: Any) -> error_details_pb2.ErrorInfo:
        return request

    handler = grpc.method_handlers_generic_handler("test.Parse", {
        "Echo": grpc.unary_unary_rpc_method_handler(
            echo, request_deserializer=error_details_pb2.ErrorInfo.FromString,
            response_serializer=error_details_pb2.ErrorInfo.SerializeToString)})
    with sync_server([handler], server_interceptors(metrics=False)) as address:
        with grpc.insecure_channel(address) as channel:
            bad = _outcome(lambda: channel.unary_unary("/test.Parse/Echo")(b"\x0a\x01\xff",
                                                                           timeout=5))
            good = _outcome(lambda: channel.unary_unary("/test.Parse/Echo")(
                error_details_pb2.ErrorInfo(reason="r").SerializeToString(), timeout=5))
    assert bad[:2] == (_C.INVALID_ARGUMENT, "The request message could not be parsed")
    assert isinstance(from_rpc_error(bad[2]), errors.InvalidInputError)
    assert good[0] is _C.OK


def test_violations_helper_is_what_the_oracle_mirrors() -> None:
    """The oracle's rules are the service's: a blank, overlong, out-of-range request trips all."""
    with pytest.raises(errors.ValidationErrors) as raised, Violations() as violations:
        violations.not_blank("description", " ")
    assert [e["field"] for e in raised.value.errors] == ["description"]
    request = tasks_pb2.CreateTaskRequest(description=" ", priority=0, timeout_seconds=0,
                                          request_id="r" * 129)
    assert _violated(request) == {"description", "priority", "timeout_seconds", "request_id"}
