"""The one encoder: whatever the error, ``to_status`` sends the documented layout.

(These were the checks of the hand-written fast path against the generated classes; with one
encoder left they check its layout for the same random errors. The exact bytes are locked by
``test_golden_status.py``.)
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from octollm_grpc import codes, status
from octollm_grpc import errors as e
from octollm_grpc._proto.octollm.errors.v1 import errors_pb2
from octollm_grpc.status import _decode, _encode, _limits

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


def assert_layout(exc: BaseException, request_id: str | None,
                  domain: str = _limits.DEFAULT_DOMAIN) -> _limits.RichStatus:
    """``to_status`` gives the documented status: the mapped code in the status and the call,
    ErrorInfo (reason, domain), the class's own details as its hook gives them (when the
    status fits unshortened), RetryInfo for positive advice, RequestInfo when known, and the
    envelope last; the pushback trailer with the advice; the same bytes every time, and what
    ``to_status_proto`` gives."""
    sent = status.to_status(exc, request_id=request_id, domain=domain)
    again = status.to_status(exc, request_id=request_id, domain=domain)
    assert sent == again
    proto = sent.proto
    assert proto == _encode.to_status_proto(exc, request_id=request_id, domain=domain)
    mapping = codes.mapping_for(exc)
    assert sent.code is mapping.grpc_code
    assert (proto.code, proto.message) == (sent.code.value[0], sent.details)
    urls = [d.type_url.rsplit("/", 1)[1] for d in proto.details]
    assert urls[0] == "google.rpc.ErrorInfo" and urls[-1] == "octollm.errors.v1.ErrorEnvelope"
    info: Any = _unpacked(proto.details[0])
    assert info.domain == domain
    retry = getattr(exc, "retry_after", None)
    advice = (isinstance(retry, (int, float)) and not isinstance(retry, bool)
              and math.isfinite(retry) and retry > 0)
    tail = ["google.rpc.RetryInfo"] * advice + ["google.rpc.RequestInfo"] * bool(request_id)
    assert urls[len(urls) - 1 - len(tail):-1] == tail
    keys = [k for k, _ in sent.trailing_metadata]
    assert keys == [_limits.DETAILS_KEY] + [_limits.PUSHBACK_KEY] * advice
    if isinstance(exc, e.OctoLLMError):
        assert info.reason == exc.error_code[:256]
        shortened = "_truncated" in _decode.from_status_proto(proto).details
        if not shortened and exc.message == sent.details:
            hooked = [d for d in proto.details[1:len(urls) - 1 - len(tail)]]
            assert [_unpacked(d) for d in hooked] == list(exc.status_details())
    else:
        assert not isinstance(exc, e.OctoLLMError) and len(urls) == 2 + len(tail)
    return sent


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
@given(common_errors(), request_ids, st.sampled_from([_limits.DEFAULT_DOMAIN, "acme.example"]))
def test_common_errors_get_the_documented_status(
    exc: e.OctoLLMError, request_id: str | None, domain: str
) -> None:
    assert_layout(exc, request_id, domain)


@settings(max_examples=600, deadline=None)
@given(any_scalar_errors(), request_ids)
def test_scalars_retry_advice_and_unexpected_errors_too(
    exc: BaseException, request_id: str | None
) -> None:
    assert_layout(exc, request_id)


def test_the_usual_errors() -> None:
    """TaskNotFoundError, a field error, a failed precondition, a rate limit, an unexpected
    exception: each with its details in the documented order."""
    sent = assert_layout(e.TaskNotFoundError("task-42"), "req-1")
    kinds = [d.type_url.rsplit(".", 1)[1] for d in sent.proto.details]
    assert kinds == ["ErrorInfo", "ResourceInfo", "RequestInfo", "ErrorEnvelope"]
    assert_layout(e.InvalidInputError("Description is required", field="description"), "r")
    assert_layout(e.InvalidStateError("Task t-1 is completed", details={"subject": "t-1"}), None)
    assert_layout(e.OctoLLMError("unicode ☺ 😈 \t\n", details={"k😈": "v☺", "": ""}), "r")
    limited = assert_layout(e.RateLimitError(limit=100, window=60, retry_after=1.5), "r")
    assert dict(limited.trailing_metadata)[_limits.PUSHBACK_KEY] == "1500"
    assert_layout(e.CapacityExceededError("full", details={"depth": 5000, "ratio": 0.5,
                                                           "hot": True, "why": None},
                                          retry_after=0.25), None)
    unexpected = assert_layout(RuntimeError("secret"), "r")
    assert unexpected.details == _limits.GENERIC_MESSAGE
    assert_layout(TimeoutError("slow"), "r")


@pytest.mark.parametrize("exc", [
    e.ValidationErrors([{"field": "a", "message": "b"}]),  # a list of violations
    e.ArmUnavailableError(["code"]),  # a list
    e.OctoLLMError("x", details={"n": 2.0}),  # integral float: exact only as JSON
    e.OctoLLMError("x", details={"n": 2**60}),  # beyond a double's integers
    e.OctoLLMError("x", details={"n": float("inf")}),  # not JSON: sent as a string
    e.OctoLLMError("x", details={"s": "lone \ud800 surrogate"}),  # not valid UTF-8
    e.OctoLLMError("x", details={"big": "y" * 8000}),  # over the trailer budget: shortened
    e.ResourceError("much later", retry_after=1e10),  # far future advice
])
def test_other_shapes_are_encoded_and_never_raise(exc: e.OctoLLMError) -> None:
    """Lists, maps, inexact numbers, bad text, big details and far advice all encode."""
    assert_layout(exc, "req")


def test_debug_info_only_when_asked() -> None:
    sent = status.to_status(RuntimeError("boom"), debug=True)
    assert any(d.type_url.endswith("DebugInfo") for d in sent.proto.details)
    plain = status.to_status(RuntimeError("boom"))
    assert not any(d.type_url.endswith("DebugInfo") for d in plain.proto.details)


def test_a_re_registered_class_gets_its_new_code() -> None:
    """The encoder caches per class: codes.register() must still change the code sent."""

    class Flaky(e.OctoLLMError):
        error_code = "FLAKY_FAST_PATH"

    codes.register(Flaky, grpc.StatusCode.ABORTED, 409)
    assert status.to_status(Flaky("once")).code is grpc.StatusCode.ABORTED
    codes.register(Flaky, grpc.StatusCode.UNAVAILABLE, 503)
    sent = status.to_status(Flaky("twice"))
    assert sent.code is grpc.StatusCode.UNAVAILABLE
    assert sent.proto.code == grpc.StatusCode.UNAVAILABLE.value[0]


def test_a_domain_that_is_not_valid_utf8_is_repaired_not_raised() -> None:
    """A domain with a lone surrogate made the old fast path raise UnicodeEncodeError from
    to_status; it is sent with ``?`` in its place, as request ids are."""
    sent = status.to_status(e.TaskNotFoundError("t-1"), domain="acme\ud800", request_id="r")
    info: Any = _unpacked(sent.proto.details[0])
    assert info.domain == "acme?"
    unexpected = status.to_status(RuntimeError("x"), domain="\udfff")
    assert _unpacked(unexpected.proto.details[0]).domain == "?"  # type: ignore[attr-defined]
