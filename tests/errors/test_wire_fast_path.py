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
from google.rpc import error_details_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from octollm_grpc import _wire, codes, status
from octollm_grpc import errors as e
from octollm_grpc._proto.octollm.errors.v1 import errors_pb2

_TYPES: dict[str, type[Message]] = {
    "type.googleapis.com/" + cls.DESCRIPTOR.full_name: cls
    for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                error_details_pb2.ResourceInfo, error_details_pb2.PreconditionFailure,
                error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo,
                error_details_pb2.RequestInfo, errors_pb2.ErrorEnvelope)
}


def _unpacked(detail: any_pb2.Any) -> Message:
    message = _TYPES[detail.type_url]()
    message.ParseFromString(detail.value)
    return message


def assert_same_status(exc: BaseException, request_id: str | None,
                       domain: str = status.DEFAULT_DOMAIN,
                       expect_fast: bool = True) -> status.RichStatus | None:
    """Whenever the fast path takes ``exc``, it sends what the slow path sends: code, message,
    the details in order (each equal unpacked) and the other trailers (the pushback)."""
    fast = status._encode_fast(exc, request_id, domain)
    if fast is None:
        assert not expect_fast, f"{exc!r} should take the fast path"
        return None
    slow = status._to_status_slow(exc, request_id, domain, False)
    sent, expected = fast.proto, slow.proto
    assert (sent.code, sent.message) == (expected.code, expected.message)
    assert [d.type_url for d in sent.details] == [d.type_url for d in expected.details]
    for got, want in zip(sent.details, expected.details, strict=True):
        assert _unpacked(got) == _unpacked(want), got.type_url
    assert (fast.code, fast.details) == (slow.code, slow.details)
    assert fast.code is codes.mapping_for(exc).grpc_code
    assert [k for k, _ in fast.trailing_metadata] == [k for k, _ in slow.trailing_metadata]
    assert fast.trailing_metadata[1:] == slow.trailing_metadata[1:]
    return fast


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
strings = st.dictionaries(text, text, max_size=5)
#: Every scalar, including what the fast path leaves to the slow one (integral floats, huge
#: ints and non-finite floats go to details_json or become strings there).
scalars = st.one_of(text, st.booleans(), st.none(),
                    st.integers(min_value=-2**60, max_value=2**60),
                    st.floats(allow_nan=True, allow_infinity=True))
scalar_details = st.dictionaries(text, scalars, max_size=5)
retry_advice = st.one_of(st.none(), st.floats(min_value=-1, max_value=1e12),
                         st.integers(min_value=0, max_value=10**6),
                         st.sampled_from([0, 0.0, float("nan"), float("inf"), True]))
request_ids = st.one_of(st.none(), st.just(""), st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40))


@st.composite
def common_errors(draw: Any) -> e.OctoLLMError:
    """Errors with string details and no retry advice: all must take the fast path."""
    kind = draw(st.sampled_from(["base", "validation", "input", "not_found", "state", "auth",
                                 "system", "coded"]))
    message, extra = draw(text), draw(strings)
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


@st.composite
def any_scalar_errors(draw: Any) -> BaseException:
    """Scalar details of every kind, retry advice of every sort, and unexpected exceptions."""
    kind = draw(st.sampled_from(["base", "validation", "state", "rate", "capacity",
                                 "unexpected"]))
    message, extra, retry = draw(text), draw(scalar_details), draw(retry_advice)
    if kind == "base":
        return e.OctoLLMError(message, details=extra, retry_after=retry)
    if kind == "validation":
        return e.ValidationError(message, field=draw(st.one_of(st.none(), text)),
                                 details=extra, retry_after=retry)
    if kind == "state":
        return e.InvalidStateError(message, details={**extra, "subject": draw(scalars)})
    if kind == "rate":
        error = e.RateLimitError(limit=draw(st.integers(0, 10**6)),
                                 window=draw(st.integers(1, 3600)), retry_after=retry)
        if draw(st.booleans()):
            error.details["key"] = draw(scalars)
        return error
    if kind == "capacity":
        return e.CapacityExceededError(message, details=extra, retry_after=retry)
    return draw(st.sampled_from([RuntimeError("secret text"), TimeoutError("t"), KeyError(1),
                                 ValueError()]))


@settings(max_examples=400, deadline=None)
@given(common_errors(), request_ids, st.sampled_from([status.DEFAULT_DOMAIN, "acme.example"]))
def test_fast_bytes_parse_to_what_the_classes_build(
    exc: e.OctoLLMError, request_id: str | None, domain: str
) -> None:
    assert_same_status(exc, request_id, domain)


@settings(max_examples=600, deadline=None)
@given(any_scalar_errors(), request_ids)
def test_scalars_retry_advice_and_unexpected_errors_match_too(
    exc: BaseException, request_id: str | None
) -> None:
    assert_same_status(exc, request_id, expect_fast=False)


def test_the_usual_errors_take_the_fast_path() -> None:
    """TaskNotFoundError, a field error, a failed precondition, a rate limit, an unexpected
    exception: all on the fast path."""
    fast = assert_same_status(e.TaskNotFoundError("task-42"), "req-1")
    assert fast is not None
    kinds = [d.type_url.rsplit(".", 1)[1] for d in fast.proto.details]
    assert kinds == ["ErrorInfo", "ResourceInfo", "RequestInfo", "ErrorEnvelope"]
    assert_same_status(e.InvalidInputError("Description is required", field="description"), "r")
    assert_same_status(e.InvalidStateError("Task t-1 is completed", details={"subject": "t-1"}),
                       None)
    assert_same_status(e.OctoLLMError("unicode ☺ 😈 \t\n", details={"k😈": "v☺", "": ""}), "r")
    limited = assert_same_status(e.RateLimitError(limit=100, window=60, retry_after=1.5), "r")
    assert limited is not None
    assert dict(limited.trailing_metadata)[status.PUSHBACK_KEY] == "1500"
    assert_same_status(e.CapacityExceededError("full", details={"depth": 5000, "ratio": 0.5,
                                                                "hot": True, "why": None},
                                               retry_after=0.25), None)
    unexpected = assert_same_status(RuntimeError("secret"), "r")
    assert unexpected is not None and unexpected.details == status.GENERIC_MESSAGE
    assert_same_status(TimeoutError("slow"), "r")


@pytest.mark.parametrize("exc", [
    e.ValidationErrors([{"field": "a", "message": "b"}]),  # a list of violations
    e.ArmUnavailableError(["code"]),  # a list
    e.OctoLLMError("x", details={"n": 2.0}),  # integral float: exact only as JSON
    e.OctoLLMError("x", details={"n": 2**60}),  # beyond a double's integers
    e.OctoLLMError("x", details={"n": float("inf")}),  # not JSON: sent as a string
    e.OctoLLMError("x", details={"s": "lone \ud800 surrogate"}),  # not valid UTF-8
    e.OctoLLMError("x", details={"big": "y" * 8000}),  # over the trailer budget: shortened
    e.ResourceError("much later", retry_after=1e10),  # beyond the fast path's range
])
def test_other_errors_take_the_slow_path_and_behave_as_before(exc: e.OctoLLMError) -> None:
    """Shapes the fast path declines are encoded by the slow path, which never raises."""
    assert status._encode_fast(exc, "req", status.DEFAULT_DOMAIN) is None
    expected = status._to_status_slow(exc, "req", status.DEFAULT_DOMAIN, False)
    assert status.to_status(exc, request_id="req") == expected
    assert expected.code is codes.mapping_for(exc).grpc_code


def test_debug_info_goes_the_slow_way() -> None:
    sent = status.to_status(RuntimeError("boom"), debug=True)
    assert any(d.type_url.endswith("DebugInfo") for d in sent.proto.details)


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
