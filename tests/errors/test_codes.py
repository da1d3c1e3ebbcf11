"""The code table row by row, and register()'s contract: arguments kept, cache refreshed,
boundaries, messages. (The autouse fixture in tests/conftest.py undoes each registration.)"""

from __future__ import annotations

import grpc
import pytest

from octollm_grpc import codes
from octollm_grpc import errors as e

_C = grpc.StatusCode

# class: (error_code, gRPC code, HTTP status, retryable, client_error) - DESIGN.md's table.
TABLE: dict[type[e.OctoLLMError], tuple[str, grpc.StatusCode, int, bool, bool]] = {
    e.OctoLLMError: ("UNKNOWN_ERROR", _C.UNKNOWN, 500, False, False),
    e.ValidationError: ("VALIDATION_ERROR", _C.INVALID_ARGUMENT, 400, False, True),
    e.InvalidInputError: ("INVALID_INPUT", _C.INVALID_ARGUMENT, 400, False, True),
    e.ValidationErrors: ("VALIDATION_ERRORS", _C.INVALID_ARGUMENT, 400, False, True),
    e.TaskNotFoundError: ("TASK_NOT_FOUND", _C.NOT_FOUND, 404, False, True),
    e.AuthenticationError: ("AUTHENTICATION_ERROR", _C.UNAUTHENTICATED, 401, False, True),
    e.AuthorizationError: ("AUTHORIZATION_ERROR", _C.PERMISSION_DENIED, 403, False, True),
    e.PiiDetectedError: ("PII_DETECTED", _C.INVALID_ARGUMENT, 400, False, True),
    e.InvalidStateError: ("FAILED_PRECONDITION", _C.FAILED_PRECONDITION, 400, False, True),
    e.ResourceError: ("RESOURCE_ERROR", _C.UNAVAILABLE, 503, True, False),
    e.ArmUnavailableError: ("ARM_UNAVAILABLE", _C.UNAVAILABLE, 503, True, False),
    e.CapacityExceededError: ("CAPACITY_EXCEEDED", _C.UNAVAILABLE, 503, True, False),
    e.RateLimitError: ("RATE_LIMIT_EXCEEDED", _C.RESOURCE_EXHAUSTED, 429, True, True),
    e.CircuitOpenError: ("CIRCUIT_OPEN", _C.UNAVAILABLE, 503, True, False),
    e.SystemError: ("SYSTEM_ERROR", _C.INTERNAL, 500, False, False),
    e.InternalError: ("INTERNAL_ERROR", _C.INTERNAL, 500, False, False),
    e.DatabaseError: ("DATABASE_ERROR", _C.INTERNAL, 500, False, False),
    e.CacheError: ("CACHE_ERROR", _C.INTERNAL, 500, False, False),
    e.SerializationError: ("SERIALIZATION_ERROR", _C.INTERNAL, 500, False, False),
    e.NetworkError: ("NETWORK_ERROR", _C.UNAVAILABLE, 502, True, False),
    e.TimeoutError: ("TIMEOUT_ERROR", _C.DEADLINE_EXCEEDED, 504, False, False),
    e.ExternalError: ("EXTERNAL_ERROR", _C.UNAVAILABLE, 502, True, False),
    e.LLMAPIError: ("LLM_API_ERROR", _C.UNAVAILABLE, 502, True, False),
    e.VectorDBError: ("VECTOR_DB_ERROR", _C.UNAVAILABLE, 502, True, False),
    e.ThirdPartyAPIError: ("THIRD_PARTY_API_ERROR", _C.UNAVAILABLE, 502, True, False),
    # What a status without a known reason decodes to: the class its code names.
    e.NotFoundError: ("NOT_FOUND", _C.NOT_FOUND, 404, False, True),
    e.AlreadyExistsError: ("ALREADY_EXISTS", _C.ALREADY_EXISTS, 409, False, True),
    e.AbortedError: ("ABORTED", _C.ABORTED, 409, True, True),
    e.OutOfRangeError: ("OUT_OF_RANGE", _C.OUT_OF_RANGE, 400, False, True),
    e.ResourceExhaustedError: ("RESOURCE_EXHAUSTED", _C.RESOURCE_EXHAUSTED, 429, True, True),
    e.UnimplementedError: ("UNIMPLEMENTED", _C.UNIMPLEMENTED, 501, False, False),
    e.CancelledCallError: ("CANCELLED", _C.CANCELLED, 499, False, True),
}


def test_every_builtin_row_is_as_designed() -> None:
    """Each class maps to exactly its row; registered() lists them all, in table order."""
    for cls, row in TABLE.items():
        assert codes.mapping_for_class(cls) == codes.ErrorMapping(*row), cls.__name__
        assert cls.error_code == row[0]
        assert codes.class_for_error_code(row[0]) is cls
    # The sample service's declared errors register when its modules are imported.
    assert [cls for cls, _ in codes.registered() if cls.__module__ == e.__name__] == list(TABLE)


def test_unregistered_classes_and_builtins() -> None:
    """Outside the hierarchy: builtin TimeoutError subclasses time out, the rest are INTERNAL."""
    unexpected = codes.UNEXPECTED
    timeout = codes.BUILTIN_TIMEOUT
    assert unexpected == codes.ErrorMapping("INTERNAL_ERROR", _C.INTERNAL, 500, False, False)
    assert timeout == codes.ErrorMapping("TIMEOUT_ERROR", _C.DEADLINE_EXCEEDED, 504, False, False)

    class SlowIO(TimeoutError):
        pass

    assert codes.mapping_for(SlowIO()) is codes.BUILTIN_TIMEOUT
    assert codes.mapping_for(ValueError()) is codes.UNEXPECTED
    assert codes.class_for_error_code("NO_SUCH_CODE") is None


@pytest.mark.parametrize(("http", "explicit", "expected"), [
    (409, None, True), (499, None, True), (500, None, False), (503, None, False),
    (409, False, False), (503, True, True),
])
def test_register_keeps_its_arguments(http: int, explicit: bool | None, expected: bool) -> None:
    """client_error defaults to http < 500; an explicit value wins; retryable is kept."""

    class Conflict(e.OctoLLMError):
        error_code = "TEST_CONFLICT"

    assert codes.register(Conflict, _C.ABORTED, http, retryable=True,
                          client_error=explicit) is Conflict
    assert codes.mapping_for(Conflict("x")) == codes.ErrorMapping(
        "TEST_CONFLICT", _C.ABORTED, http, True, expected)
    assert codes.registered()[-1] == (Conflict, codes.mapping_for_class(Conflict))


def test_register_refreshes_resolved_subclasses() -> None:
    """A subclass resolved through its parent follows a later registration of the parent."""

    class Parent(e.OctoLLMError):
        error_code = "TEST_PARENT"

    class Child(Parent):
        pass

    assert codes.mapping_for(Child("x")).grpc_code is _C.UNKNOWN  # via OctoLLMError
    codes.register(Parent, _C.ABORTED, 409)
    assert codes.mapping_for(Child("x")).grpc_code is _C.ABORTED
    codes.register(Parent, _C.ABORTED, 409)  # the same class again: allowed
    assert codes.class_for_error_code("TEST_PARENT") is Parent


@pytest.mark.parametrize("http", [400, 599])
def test_register_accepts_the_status_range_edges(http: int) -> None:
    """400 and 599 are valid statuses."""

    class Edge(e.OctoLLMError):
        error_code = "TEST_EDGE"

    codes.register(Edge, _C.ABORTED, http)
    mapping = codes.mapping_for_class(Edge)
    assert mapping.http_status == http
    # The default comes from the code table: resilience.retry retries ABORTED.
    assert mapping.retryable is codes.behaviour(_C.ABORTED).helper_retry is True


@pytest.mark.parametrize(("args", "error", "message"), [
    ((e.ResourceError, _C.UNAVAILABLE, 399), ValueError,
     "http_status must be a 4xx or 5xx status, not 399"),
    ((e.ResourceError, _C.UNAVAILABLE, 600), ValueError,
     "http_status must be a 4xx or 5xx status, not 600"),
    ((e.ResourceError, 14, 503), ValueError,
     "grpc_code must be a non-OK grpc.StatusCode, not 14"),
    ((e.ResourceError, _C.OK, 503), ValueError, "grpc_code must be a non-OK grpc.StatusCode"),
    ((KeyError, _C.UNAVAILABLE, 503), TypeError,
     "register\\(\\) takes an OctoLLMError subclass, not <class 'KeyError'>"),
    ((e.ResourceError("x"), _C.UNAVAILABLE, 503), TypeError,
     "register\\(\\) takes an OctoLLMError subclass"),
])
def test_register_refuses_with_a_message(args: tuple[object, ...], error: type[Exception],
                                         message: str) -> None:
    """Invalid registrations are refused, with a message naming the argument."""
    with pytest.raises(error, match=message):
        codes.register(*args)  # type: ignore[arg-type]
    assert codes.mapping_for_class(e.ResourceError).http_status == 503  # unchanged


def test_duplicate_error_code_names_both_classes() -> None:
    """Two classes may not share an error_code: the message names both."""

    class Other(e.OctoLLMError):
        error_code = "RATE_LIMIT_EXCEEDED"

    with pytest.raises(ValueError, match=(
            r"error_code 'RATE_LIMIT_EXCEEDED' of .*Other is already used by RateLimitError; "
            r"give the class its own error_code")):
        codes.register(Other, _C.ABORTED, 409)
    assert codes.class_for_error_code("RATE_LIMIT_EXCEEDED") is e.RateLimitError


@pytest.mark.parametrize(("code", "cls"), [
    (_C.CANCELLED, e.CancelledCallError),
    (_C.INVALID_ARGUMENT, e.ValidationError), (_C.OUT_OF_RANGE, e.OutOfRangeError),
    (_C.NOT_FOUND, e.NotFoundError), (_C.ALREADY_EXISTS, e.AlreadyExistsError),
    (_C.FAILED_PRECONDITION, e.InvalidStateError), (_C.ABORTED, e.AbortedError),
    (_C.UNAUTHENTICATED, e.AuthenticationError), (_C.PERMISSION_DENIED, e.AuthorizationError),
    (_C.RESOURCE_EXHAUSTED, e.ResourceExhaustedError), (_C.UNIMPLEMENTED, e.UnimplementedError),
    (_C.UNAVAILABLE, e.NetworkError),
    (_C.DEADLINE_EXCEEDED, e.TimeoutError), (_C.INTERNAL, e.SystemError),
    (_C.UNKNOWN, e.SystemError), (_C.DATA_LOSS, e.SystemError),
])
def test_bare_status_codes_decode_to_a_fitting_class(code: grpc.StatusCode,
                                                     cls: type[e.OctoLLMError]) -> None:
    """A status without our details decodes to the class its code suggests."""
    assert codes.class_for_status_code(code) is cls
