"""Property-based: any JSON-like details and message survive; no bytes crash the decoder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octollm_grpc import errors as e
from octollm_grpc.status import from_rpc_error, to_status
from octollm_grpc.status._limits import DETAILS_KEY, PUSHBACK_KEY
from tests.servers import sync_server

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
details_dicts = st.dictionaries(st.text(max_size=10), json_values, max_size=6)
retry_afters = st.none() | st.integers(0, 10**6) | st.floats(0.001, 1e5)


@dataclass
class FakeCall:
    """What a failed call exposes: code, details, trailing metadata (as grpcio gives them)."""

    code_: grpc.StatusCode
    message: str
    trailers: Any = field(default=())

    def code(self) -> grpc.StatusCode:
        return self.code_

    def details(self) -> str:
        return self.message

    def trailing_metadata(self) -> Any:
        return self.trailers


def _through_codec(error: BaseException) -> e.OctoLLMError:
    status = to_status(error)
    return from_rpc_error(FakeCall(status.code, status.details, status.trailing_metadata))


@given(message=st.text(), details=details_dicts, retry_after=retry_afters)
@settings(max_examples=300, deadline=None)
def test_details_and_message_survive_the_codec(
    message: str, details: dict[str, Any], retry_after: float | None
) -> None:
    """encode -> decode gives back the same message, details (exact types) and retry_after."""
    sent = e.CapacityExceededError(message, details=details, retry_after=retry_after)
    got = _through_codec(sent)
    assert type(got) is e.CapacityExceededError
    assert got.message == message
    assert dict(got.details) == details
    assert got == sent


@given(message=st.text(max_size=200), details=details_dicts)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_details_survive_a_real_wire(message: str, details: dict[str, Any]) -> None:
    """The same holds through a real grpc server and channel (fewer examples: it is slower)."""
    sent = e.ExternalError(message, details=details)

    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort_with_status(to_status(sent))
        raise AssertionError("unreachable")

    handlers = [grpc.method_handlers_generic_handler(
        "p.S", {"M": grpc.unary_unary_rpc_method_handler(handler)})]
    with sync_server(handlers, workers=2) as target, grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/p.S/M")(b"")
    assert from_rpc_error(info.value) == sent


@given(garbage=st.binary(max_size=512), code=st.sampled_from(list(grpc.StatusCode)[1:]))
@settings(max_examples=500, deadline=None)
def test_garbage_details_never_crash_the_decoder(garbage: bytes, code: grpc.StatusCode) -> None:
    """Arbitrary bytes in grpc-status-details-bin decode to a sensible class, never raise."""
    got = from_rpc_error(FakeCall(code, "boom", ((DETAILS_KEY, garbage), (PUSHBACK_KEY, "x"))))
    assert isinstance(got, e.OctoLLMError)
    assert got.code() is code


@given(payload=st.binary(max_size=256))
@settings(max_examples=300, deadline=None)
def test_garbage_inside_known_detail_types(payload: bytes) -> None:
    """Well-formed Status whose details hold garbage bytes under known type URLs still decode."""
    status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="m")
    for name in ("google.rpc.ErrorInfo", "google.rpc.RetryInfo", "google.rpc.BadRequest",
                 "google.rpc.RequestInfo", "octollm.errors.v1.ErrorEnvelope"):
        status.details.append(any_pb2.Any(type_url=f"type.googleapis.com/{name}", value=payload))
    got = from_rpc_error(FakeCall(grpc.StatusCode.NOT_FOUND, "m",
                                  ((DETAILS_KEY, status.SerializeToString()),)))
    assert isinstance(got, e.OctoLLMError) and got.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.UNAVAILABLE, e.NetworkError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, e.TimeoutError),
        (grpc.StatusCode.INVALID_ARGUMENT, e.ValidationError),
        (grpc.StatusCode.NOT_FOUND, e.NotFoundError),
        (grpc.StatusCode.UNAUTHENTICATED, e.AuthenticationError),
        (grpc.StatusCode.PERMISSION_DENIED, e.AuthorizationError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, e.ResourceExhaustedError),
        (grpc.StatusCode.FAILED_PRECONDITION, e.InvalidStateError),
        (grpc.StatusCode.INTERNAL, e.SystemError),
        (grpc.StatusCode.UNKNOWN, e.SystemError),
    ],
)
def test_bare_status_decodes_by_code(code: grpc.StatusCode, cls: type[e.OctoLLMError]) -> None:
    """A status without details (other servers, proxies, dead connections) gets a class by code."""
    got = from_rpc_error(FakeCall(code, "upstream said no", None))
    assert type(got) is cls
    assert got.code() is code
    assert got.message == got.details() == "upstream said no"


def test_foreign_rich_status_without_envelope() -> None:
    """Another language's server sending ErrorInfo + BadRequest + RetryInfo is understood."""
    status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="bad")
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="VALIDATION_ERRORS", domain="go.example"))
    bad = any_pb2.Any()
    bad.Pack(error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="name", description="required")]))
    retry = any_pb2.Any()
    retry.Pack(error_details_pb2.RetryInfo(retry_delay={"seconds": 2}))
    unknown = any_pb2.Any(type_url="type.googleapis.com/acme.Unknown", value=b"\x08\x01")
    status.details.extend([info, unknown, bad, retry])
    got = from_rpc_error(FakeCall(grpc.StatusCode.INVALID_ARGUMENT, "bad",
                                  ((DETAILS_KEY, status.SerializeToString()),)))
    assert type(got) is e.ValidationErrors
    assert got.errors == [{"field": "name", "message": "required"}]
    assert got.retry_after == 2


def test_mismatched_status_code_is_ignored() -> None:
    """Details whose code differs from the call's are not trusted (grpcio-status's rule)."""
    status = to_status(e.TaskNotFoundError("t"))
    got = from_rpc_error(FakeCall(grpc.StatusCode.UNAVAILABLE, "other", status.trailing_metadata))
    assert type(got) is e.NetworkError and got.message == "other"


def test_non_json_details_are_encoded_safely() -> None:
    """Details holding objects JSON cannot carry are sent as their text, not a crash."""
    odd = type("Odd", (), {"__str__": lambda self: "T!"})()
    sent = e.CacheError("x", details={"when": odd, "nan": float("nan"), "tuple": (1, 2),
                                      3: "int key"})
    got = _through_codec(sent)
    assert got.details == {"when": "T!", "nan": "nan", "tuple": [1, 2], "3": "int key"}


def test_lone_surrogates_do_not_crash_encoding() -> None:
    """A message with a lone surrogate (invalid UTF-8) is sent with a replacement character."""
    got = _through_codec(e.ValidationError("bad \udcff byte"))
    assert got.message == "bad ? byte"
