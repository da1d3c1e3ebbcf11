"""status.decode's helpers at their exact edges: pushback text, JSON depth, odd call objects."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc import errors
from octollm_grpc.status import to_status
from octollm_grpc.status._decode import (
    _depth_of,
    _depth_within,
    _integral_to_int,
    _json_details,
    _pushback_seconds,
    from_rpc_error,
    from_status_proto,
)
from octollm_grpc.status._limits import DETAILS_KEY, MAX_RETRY_AFTER, PUSHBACK_KEY


@pytest.mark.parametrize(("value", "seconds"), [
    ("1500", 1.5), ("2000", 2), ("0", 0), (b"250", 0.25), (" 30 ", 0.03), ("7", 0.007),
    ("000000000000000000001000", 1), ("999999999999999", MAX_RETRY_AFTER),
    ("1000000000000000", None), ("-1", None), ("+5", None), ("1e3", None), ("1.5", None),
    ("", None), ("abc", None), ("١٢", None), (b"\xff", None),
])
def test_pushback_text(value: str | bytes, seconds: float | None) -> None:
    """Only plain ASCII digits (at most 15 significant) are advice, in seconds, int when whole."""
    got = _pushback_seconds([("other", "1"), (PUSHBACK_KEY, value)])
    assert got == seconds
    assert type(got) is type(seconds)


def test_pushback_first_key_decides_and_garbage_trailers_give_none() -> None:
    """The first pushback key decides (an invalid one is not skipped); junk trailers: None."""
    assert _pushback_seconds([(PUSHBACK_KEY, "x"), (PUSHBACK_KEY, "1000")]) is None
    assert _pushback_seconds([(PUSHBACK_KEY, "3000"), (PUSHBACK_KEY, "x")]) == 3
    assert _pushback_seconds(None) is None
    assert _pushback_seconds([]) is None
    assert _pushback_seconds([("a", "b")]) is None
    assert _pushback_seconds(42) is None
    assert _pushback_seconds([("only-one",)]) is None


@pytest.mark.parametrize(("text", "limit", "within"), [
    ("[[1]]", 2, True), ("[[1]]", 1, False), ("[[[]]]", 2, False), ("[[],[],[]]", 2, True),
    ("[[],[],[]]", 1, False),
    ('{"a": {"b": 1}}', 2, True), ('{"a": {"b": 1}}', 1, False),
    ('["[[[[", "{{{{"]', 1, True), ('["\\"[[[["]', 1, True), ('["\\\\", [[1]]]', 2, False),
    ('["\\\\", [[1]]]', 3, True), ('["unterminated [[[[[', 1, True), ("[]]][[", 1, True),
    ('[["a\\\\\\"[["]]', 2, True), ("[1] [2] [3]", 1, True), ("[[1]] [[2]]", 1, False),
])
def test_depth_within(text: str, limit: int, within: bool) -> None:
    """Nesting is counted outside strings (escapes handled); closing brackets lower it."""
    assert _depth_within(text, limit) is within


def test_depth_within_agrees_with_parsing_where_json_is_valid() -> None:
    """For valid JSON, the scan's answer equals the parsed value's depth against the limit."""
    samples = ['{"a": [1, {"b": "]]]"}]}', '[[[["\\"["]]]]', '{"k": "\\\\"}', "[[],[[]]]"]
    for text in samples:
        depth = _depth_of(json.loads(text), 100)
        for limit in range(0, depth + 2):
            assert _depth_within(text, limit) is (depth <= limit), (text, limit)


def test_depth_of_counts_up_to_one_past_the_limit() -> None:
    """Depth of maps and lists; past limit + 1 it stops counting; scalars are 0."""
    assert _depth_of(1, 5) == 0
    assert _depth_of([], 5) == 1
    assert _depth_of({"a": [1, {"b": []}]}, 5) == 4
    assert _depth_of([[[[[]]]]], 2) == 3
    assert _depth_of([[1]], -1) == 0
    assert _depth_of({}, 0) == 1


def test_json_details_bounds() -> None:
    """Only a JSON object within the size and depth bounds is details."""
    assert _json_details('{"a": 1}') == {"a": 1}
    assert _json_details("[1]") is None
    assert _json_details("{bad") is None
    assert _json_details('{"a": ' + "[" * 70 + "]" * 70 + "}") is None
    assert _json_details('{"a": ' + "[" * 60 + "]" * 60 + "}") is not None
    big = '{"a": "' + "x" * (64 * 1024) + '"}'
    assert _json_details(big) is None
    wide = '{"a": "' + "é" * (33 * 1024) + '"}'  # under the limit in characters, over in bytes
    assert _json_details(wide) is None


def test_integral_to_int_recurses() -> None:
    """Whole floats become ints in maps and lists; other values stay."""
    assert _integral_to_int({"a": [1.0, 2.5, {"b": 3.0}], "c": "4"}) == {
        "a": [1, 2.5, {"b": 3}], "c": "4"}
    assert type(_integral_to_int(1.0)) is int


class Broken:
    """A call object whose every method raises."""

    def code(self) -> Any:
        raise RuntimeError("no")

    details = trailing_metadata = initial_metadata = debug_error_string = code


class Odd:
    """A call object answering with the wrong types."""

    def code(self) -> Any:
        return 14

    def details(self) -> Any:
        return 12345

    def trailing_metadata(self) -> Any:
        return None

    def initial_metadata(self) -> Any:
        return (("k", "v"),)

    def debug_error_string(self) -> Any:
        return 7


def test_from_rpc_error_of_objects_missing_or_breaking_methods() -> None:
    """No methods, raising methods, wrong types: UNKNOWN, empty or str() message, no crash."""
    for err in (object(), Broken()):
        error = from_rpc_error(err)
        assert type(error) is errors.SystemError
        assert error.code() is grpc.StatusCode.UNKNOWN
        assert (error.message, error.trailing_metadata(), error.initial_metadata()) == (
            "", None, None)
        assert error.debug_error_string() == ""
        assert error.__cause__ is None
    odd = from_rpc_error(Odd())
    assert odd.code() is grpc.StatusCode.UNKNOWN and odd.message == "12345"
    assert odd.initial_metadata() == (("k", "v"),) and odd.debug_error_string() == ""


class Call(grpc.RpcError):
    """A failed call as grpc hands it over, with chosen parts."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: Any) -> None:
        self._parts = (code, message, trailers)

    def code(self) -> grpc.StatusCode:
        return self._parts[0]

    def details(self) -> str:
        return self._parts[1]

    def trailing_metadata(self) -> Any:
        return self._parts[2]

    def initial_metadata(self) -> Any:
        return (("x-initial", "1"),)

    def debug_error_string(self) -> str:
        return "debug text"


def test_from_rpc_error_keeps_every_part_of_the_call() -> None:
    """Code, message, trailers, initial metadata, debug string and the cause are all kept."""
    status = to_status(errors.TaskNotFoundError("t-1"), request_id="rid")
    call = Call(status.code, status.details, status.trailing_metadata)
    error = from_rpc_error(call)
    assert type(error) is errors.TaskNotFoundError
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.message == "Task t-1 not found" and error.request_id == "rid"
    assert error.trailing_metadata() == status.trailing_metadata
    assert error.initial_metadata() == (("x-initial", "1"),)
    assert error.debug_error_string() == "debug text"
    assert error.__cause__ is call
    assert from_rpc_error(error) is error


def test_details_of_another_code_are_ignored_but_pushback_is_kept() -> None:
    """A status of a different code than the call's is not this call's; pushback still reads."""
    status = to_status(errors.TaskNotFoundError("t-1"))
    call = Call(grpc.StatusCode.UNAVAILABLE, "down",
                (*status.trailing_metadata, (PUSHBACK_KEY, "4000")))
    error = from_rpc_error(call)
    assert type(error) is errors.NetworkError
    assert error.message == "down" and error.retry_after == 4


def test_retry_info_wins_over_pushback() -> None:
    """Advice from RetryInfo is kept; the pushback trailer only fills a gap."""
    status = to_status(errors.RateLimitError(limit=1, window=60, retry_after=9))
    call = Call(status.code, status.details, (*status.trailing_metadata, (PUSHBACK_KEY, "1")))
    assert from_rpc_error(call).retry_after == 9


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def test_from_status_proto_without_our_details() -> None:
    """A bare status: the class of its code; BadRequest violations become details."""
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="a", description="too long",
                                                    reason="LEN"),
        error_details_pb2.BadRequest.FieldViolation(field="b", description="missing")])
    info = error_details_pb2.ErrorInfo(reason="", metadata={"k": "v"})
    error = from_status_proto(status_pb2.Status(code=3, message="bad", details=[
        _packed(bad), _packed(info)]))
    assert type(error) is errors.ValidationError
    assert error.details == {"errors": [
        {"field": "a", "message": "too long", "reason": "LEN"},
        {"field": "b", "message": "missing"}]}
    plain = from_status_proto(status_pb2.Status(code=5, message="nope", details=[_packed(info)]))
    assert type(plain) is errors.NotFoundError and plain.details == {"k": "v"}
    unknown = from_status_proto(status_pb2.Status(code=99, message="?"))
    assert unknown.code() is grpc.StatusCode.UNKNOWN
    given = from_status_proto(status_pb2.Status(code=5), grpc.StatusCode.ABORTED)
    assert given.code() is grpc.StatusCode.ABORTED


def test_a_broken_detail_is_skipped_and_the_rest_decoded() -> None:
    """An undecodable RetryInfo is skipped; the ErrorInfo after it still decodes."""
    broken = any_pb2.Any(type_url="type.googleapis.com/google.rpc.RetryInfo", value=b"\xff\xff")
    info = error_details_pb2.ErrorInfo(reason="TASK_NOT_FOUND", metadata={"task_id": "t"})
    error = from_status_proto(status_pb2.Status(code=5, message="m", details=[
        broken, _packed(info)]))
    assert type(error) is errors.TaskNotFoundError and error.retry_after is None
    assert error.details == {"task_id": "t"}
    unknown_type = any_pb2.Any(type_url="type.googleapis.com/no.such.Type", value=b"\x08\x01")
    kept = from_status_proto(status_pb2.Status(code=5, message="m", details=[unknown_type]))
    assert kept.status_details() == (unknown_type,)
    assert DETAILS_KEY == "grpc-status-details-bin"


class RestoreFails(errors.OctoLLMError):
    """A registered class whose rebuilding raises (a user's broken override)."""

    error_code = "TEST_RESTORE_FAILS"

    @classmethod
    def restore(cls, *args: Any, **kwargs: Any) -> errors.OctoLLMError:
        raise RuntimeError("cannot rebuild")


def test_a_class_that_cannot_be_rebuilt_decodes_as_its_code(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding never raises: a broken class falls back to the code's class, message kept."""
    from octollm_grpc import codes

    found = {"TEST_RESTORE_FAILS": RestoreFails}
    monkeypatch.setattr(codes, "class_for_error_code", found.get)
    info = error_details_pb2.ErrorInfo(reason="TEST_RESTORE_FAILS")
    error = from_status_proto(status_pb2.Status(code=10, message="conflict",
                                                details=[_packed(info)]))
    assert type(error) is errors.AbortedError
    assert error.message == "conflict" and error.code() is grpc.StatusCode.ABORTED
    assert error.rich_status is None


def test_detail_classes_are_looked_up_once_and_the_cache_stays_bounded() -> None:
    """Known types unpack to their classes (cached); the cache is cleared past 1024 names."""
    from octollm_grpc.status import _decode as decode

    decode._classes.clear()
    url = "type.googleapis.com/google.rpc.ResourceInfo"
    assert decode._message_class(url) is error_details_pb2.ResourceInfo
    assert decode._classes == {url: error_details_pb2.ResourceInfo}
    assert decode._message_class("type.googleapis.com/no.such.Type") is None
    assert decode._message_class("example.com/google.rpc.ResourceInfo") is None
    for n in range(1021):
        decode._message_class(f"type.googleapis.com/none.T{n}")
    assert len(decode._classes) == 1024
    decode._message_class("type.googleapis.com/none.Last")
    assert decode._classes == {"type.googleapis.com/none.Last": None}
    garbage = any_pb2.Any(type_url=url, value=b"\xff\xff")
    assert decode._unpacked(garbage) == garbage


def test_known_class_details_arrive_unpacked() -> None:
    """A detail of a known type comes back as its generated class, with its fields."""
    info = error_details_pb2.ResourceInfo(resource_type="task", resource_name="t-1")
    error = from_status_proto(status_pb2.Status(code=5, message="m", details=[_packed(info)]))
    (got,) = error.status_details()
    assert type(got) is error_details_pb2.ResourceInfo and got == info


def test_only_the_status_details_trailer_is_read_as_a_status() -> None:
    """Another binary trailer sent first (a trace context, say) is not taken for the status."""
    status = to_status(errors.TaskNotFoundError("t-1"))
    other = status_pb2.Status(code=5, message="not the status").SerializeToString()
    call = Call(status.code, status.details,
                (("x-trace-bin", other), *status.trailing_metadata))
    error = from_rpc_error(call)
    assert type(error) is errors.TaskNotFoundError
    assert error.details == {"task_id": "t-1"}


def test_the_envelope_s_message_wins_over_the_status_line() -> None:
    """The status line may be cut or rewritten on the way (a proxy, the size limits); the
    envelope's message is the error's own."""
    status = to_status(errors.TaskNotFoundError("t-1"))
    error = from_rpc_error(Call(status.code, "rewritten by a proxy", status.trailing_metadata))
    assert error.message == "Task t-1 not found"
