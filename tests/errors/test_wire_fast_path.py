"""The hand-written encoding of common statuses (``_wire``) against the generated classes.

``to_status`` assembles the bytes of the usual status (string details, no retry advice) from
pre-encoded pieces; everything else goes through the message classes. Whatever the inputs,
the fast bytes must parse to the message the classes build: same code and message, the same
details in the same order, each detail equal once unpacked (maps compare as maps; only their
order on the wire may differ).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from octollm_grpc import _wire, codes, status
from octollm_grpc import errors as e
from octollm_grpc._proto.octollm.errors.v1 import errors_pb2

_TYPES: dict[str, type[Message]] = {
    "type.googleapis.com/" + cls.DESCRIPTOR.full_name: cls
    for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                error_details_pb2.ResourceInfo, error_details_pb2.PreconditionFailure,
                error_details_pb2.RequestInfo, errors_pb2.ErrorEnvelope)
}


def _unpacked(detail: any_pb2.Any) -> Message:
    message = _TYPES[detail.type_url]()
    message.ParseFromString(detail.value)
    return message


def _slow(exc: e.OctoLLMError, request_id: str | None, domain: str) -> status_pb2.Status:
    return status._encode(exc, request_id, domain, False).proto


def assert_same_status(exc: e.OctoLLMError, request_id: str | None,
                       domain: str = status.DEFAULT_DOMAIN) -> status.RichStatus:
    """The fast path took ``exc`` and wrote what the classes build; returns its status."""
    fast = status._encode_fast(exc, request_id, domain)
    assert fast is not None, f"{exc!r} should take the fast path"
    sent = fast.proto
    expected = _slow(exc, request_id, domain)
    assert (sent.code, sent.message) == (expected.code, expected.message)
    assert [d.type_url for d in sent.details] == [d.type_url for d in expected.details]
    for got, want in zip(sent.details, expected.details, strict=True):
        assert _unpacked(got) == _unpacked(want), got.type_url
    assert fast.code is codes.mapping_for(exc).grpc_code
    assert fast.details == expected.message
    assert fast.trailing_metadata == ((status.DETAILS_KEY, sent.SerializeToString()),) or \
        status_pb2.Status.FromString(fast.trailing_metadata[0][1]) == sent
    return fast


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
details = st.dictionaries(text, text, max_size=5)
request_ids = st.one_of(st.none(), st.just(""), st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40))


@st.composite
def common_errors(draw: Any) -> e.OctoLLMError:
    """Errors with string details and no retry advice, of every kind the fast path writes."""
    kind = draw(st.sampled_from(["base", "validation", "input", "not_found", "state", "auth",
                                 "system", "coded"]))
    message, extra = draw(text), draw(details)
    if kind == "base":
        return e.OctoLLMError(message, details=extra)
    if kind == "validation":
        return e.ValidationError(message, field=draw(st.one_of(st.none(), text)), details=extra)
    if kind == "input":
        return e.InvalidInputError(message, field=draw(text))
    if kind == "not_found":
        return e.TaskNotFoundError(draw(text))
    if kind == "state":
        return e.InvalidStateError(message, details={**extra, "subject": draw(text)})
    if kind == "auth":
        return e.AuthorizationError(message, details=extra)
    if kind == "system":
        return e.NetworkError(message, details=extra)
    return e.OctoLLMError(message, error_code=draw(st.sampled_from(
        ["CUSTOM_CODE", "TASK_NOT_FOUND", ""])), details=extra)


@settings(max_examples=400, deadline=None)
@given(common_errors(), request_ids, st.sampled_from([status.DEFAULT_DOMAIN, "acme.example"]))
def test_fast_bytes_parse_to_what_the_classes_build(
    exc: e.OctoLLMError, request_id: str | None, domain: str
) -> None:
    assert_same_status(exc, request_id, domain)


def test_the_usual_errors_take_the_fast_path() -> None:
    """TaskNotFoundError, a field error, a failed precondition: all on the fast path."""
    fast = assert_same_status(e.TaskNotFoundError("task-42"), "req-1")
    kinds = [d.type_url.rsplit(".", 1)[1] for d in fast.proto.details]
    assert kinds == ["ErrorInfo", "ResourceInfo", "RequestInfo", "ErrorEnvelope"]
    assert_same_status(e.InvalidInputError("Description is required", field="description"), "r")
    assert_same_status(e.InvalidStateError("Task t-1 is completed", details={"subject": "t-1"}),
                       None)
    assert_same_status(e.OctoLLMError("unicode ☺ 😈 \t\n", details={"k😈": "v☺", "": ""}), "r")


@pytest.mark.parametrize("exc", [
    e.RateLimitError(limit=100, window=60, retry_after=30),  # numbers, retry advice
    e.ValidationErrors([{"field": "a", "message": "b"}]),  # a list of violations
    e.OctoLLMError("x", details={"n": 1}),  # not all strings
    e.OctoLLMError("x", details={"s": "lone \ud800 surrogate"}),  # not valid UTF-8
    e.OctoLLMError("x", details={"big": "y" * 8000}),  # over the trailer budget: shortened
    e.ResourceError("later", retry_after=2),
])
def test_other_errors_take_the_slow_path_and_behave_as_before(exc: e.OctoLLMError) -> None:
    assert status._encode_fast(exc, "req", status.DEFAULT_DOMAIN) is None
    try:
        expected: Any = _slow(exc, "req", status.DEFAULT_DOMAIN)
    except Exception as error:
        with pytest.raises(type(error)):
            status.to_status(exc, request_id="req")
        return
    assert status.to_status(exc, request_id="req").proto == expected


def test_a_re_registered_class_gets_its_new_code() -> None:
    """The fast path caches per class: codes.register() must still change the code sent."""

    class Flaky(e.OctoLLMError):
        error_code = "FLAKY_FAST_PATH"

    codes.register(Flaky, grpc.StatusCode.ABORTED, 409)
    assert status.to_status(Flaky("once")).code is grpc.StatusCode.ABORTED
    codes.register(Flaky, grpc.StatusCode.UNAVAILABLE, 503)
    sent = status.to_status(Flaky("twice"))
    assert sent.code is grpc.StatusCode.UNAVAILABLE
    assert sent.proto.code == grpc.StatusCode.UNAVAILABLE.value[0]


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varints_match_protobuf(value: int) -> None:
    """_wire.varint is protobuf's base-128 encoding (checked through a uint64 field)."""
    from google.protobuf import wrappers_pb2

    encoded = wrappers_pb2.UInt64Value(value=value).SerializeToString()
    expected = (b"\x08" + _wire.varint(value)) if value else b""
    assert encoded == expected
