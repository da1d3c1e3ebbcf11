"""The OctoLLM exception hierarchy, with the seed standard's names and signatures.

Every class has a unique ``error_code`` (it travels as ``google.rpc.ErrorInfo.reason``, so a
client rebuilds the exact class). Every instance is also a :class:`grpc.RpcError`: it answers
``code()``, ``details()``, ``trailing_metadata()``, so ``except grpc.RpcError`` handlers keep
working when a resilient channel raises the typed exception.

The one name clash, ``details``: the seed makes it a dict, gRPC makes it a method returning the
message. Here it is an :class:`ErrorDetails`, a ``dict`` that is also callable: ``e.details["x"]``
reads a detail and ``e.details()`` returns the message, as gRPC code expects.
"""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "ArmUnavailableError",
    "AuthenticationError",
    "AuthorizationError",
    "CacheError",
    "CancelledCallError",
    "CapacityExceededError",
    "CircuitOpenError",
    "DatabaseError",
    "ErrorDetails",
    "ExternalError",
    "InternalError",
    "InvalidInputError",
    "InvalidStateError",
    "LLMAPIError",
    "NetworkError",
    "NotFoundError",
    "OctoLLMError",
    "OutOfRangeError",
    "PiiDetectedError",
    "RateLimitError",
    "ResourceError",
    "ResourceExhaustedError",
    "SerializationError",
    "SystemError",
    "TaskNotFoundError",
    "ThirdPartyAPIError",
    "TimeoutError",
    "UnimplementedError",
    "ValidationError",
    "ValidationErrors",
    "VectorDBError",
]


class ErrorDetails(dict[str, Any]):
    """The error's details: a plain ``dict`` that, called, returns the error message.

    ``grpc.RpcError`` handlers call ``e.details()`` for the message; seed-style code reads
    ``e.details["task_id"]``. Both work on the same attribute.
    """

    __slots__ = ("_message",)

    def __init__(self, data: Mapping[str, Any] | None = None, message: str = "") -> None:
        super().__init__(data or {})
        self._message = message

    def __call__(self) -> str:
        return self._message

    def __reduce__(self) -> tuple[Any, ...]:
        return (ErrorDetails, (dict(self), self._message))


class OctoLLMError(grpc.RpcError):
    """Base exception for all OctoLLM errors.

    ``error_code`` defaults to the class's own code, so a subclass that only sets the class
    attribute needs no ``__init__``.
    """

    error_code: str = "UNKNOWN_ERROR"
    """The class's stable machine-readable code; instances may carry another."""

    #: Filled in by :func:`octollm_grpc.status.from_rpc_error` for an error that came over the
    #: wire; ``None`` for one raised locally (then ``code()`` comes from the mapping table).
    _wire_code: grpc.StatusCode | None = None
    _trailing_metadata: Any = None
    _initial_metadata: Any = None
    _debug_error_string: str = ""
    #: The request id the server reported (``RequestInfo``), for errors that came over the wire.
    request_id: str | None = None
    #: The decoded ``google.rpc.Status`` of an error that came over the wire, else ``None``.
    rich_status: Any = None

    details: ErrorDetails  # a dict and a method at once, see the module docstring
    #: The class's own details a decoded error arrived with (see :meth:`status_details`).
    _received_details: tuple[Message, ...] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hook = cls.__dict__.get("status_details")
        if hook is not None:
            # A decoded error answers with what arrived, whatever the class computes.
            setattr(cls, "status_details", _received_first(hook))  # noqa: B010

    def __init__(
        self,
        message: str,
        error_code: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code or type(self).error_code
        self.details = ErrorDetails(details, message)
        self.retry_after = retry_after

    def status_details(self) -> Sequence[Message]:
        """The standard detail messages this error adds to its ``google.rpc.Status``.

        Override it in a subclass to send ``ResourceInfo``, ``QuotaFailure``,
        ``PreconditionFailure``, ``BadRequest``, ``Help``, ``LocalizedMessage`` or any generated
        message (an ``Any`` is sent as it is). Build them from ``self.message`` and
        ``self.details``: when the status would be too big for the trailer, the encoder calls
        the hook on a copy whose details are shortened (and leaves its details out if even
        that does not fit). The framework always adds ``ErrorInfo``, ``RetryInfo``,
        ``RequestInfo``, ``DebugInfo`` (debug only) and its envelope itself; the class's
        details go right after ``ErrorInfo``. A hook that raises, or gives something that is
        not a message, costs only its own details (a warning is logged).

        A decoded error (from :func:`octollm_grpc.status.from_rpc_error`) answers with the
        details that arrived other than those five, unpacked to their generated classes when
        the default descriptor pool knows the type, else as the ``Any``, even when its class
        overrides this method; so re-raising it sends the same details on.
        """
        return self._received_details or ()

    # -- the seed's API ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The seed's JSON envelope: ``error``, ``message``, ``details`` and ``retry_after``."""
        result: dict[str, Any] = {
            "error": self.error_code,
            "message": self.message,
            "details": dict(self.details),
        }
        if self.retry_after:
            result["retry_after"] = self.retry_after
        return result

    # -- grpc.Call's API, so the error is a drop-in grpc.RpcError ---------------------------

    def code(self) -> grpc.StatusCode:
        """The gRPC status code: the one received, or the mapped one for a local error."""
        if self._wire_code is not None:
            return self._wire_code
        from octollm_grpc.codes import mapping_for

        return mapping_for(self).grpc_code

    def trailing_metadata(self) -> Any:
        """The call's trailing metadata when the error came over the wire, else ``None``."""
        return self._trailing_metadata

    def initial_metadata(self) -> Any:
        """The call's initial metadata when the error came over the wire, else ``None``."""
        return self._initial_metadata

    def debug_error_string(self) -> str:
        """gRPC core's debug string when the error came over the wire, else ``""``."""
        return self._debug_error_string

    # -- rebuilding without the subclass's own constructor ------------------------------------

    @classmethod
    def restore(
        cls,
        message: str,
        error_code: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> OctoLLMError:
        """Build an instance from its parts, bypassing the subclass's ``__init__``.

        Subclasses such as ``TaskNotFoundError(task_id)`` compose their message from
        arguments; a decoder has the finished parts, so it uses this instead.
        """
        error = cls.__new__(cls)
        OctoLLMError.__init__(error, message, error_code, details, retry_after)
        return error

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, OctoLLMError)
        return (
            self.message == other.message
            and self.error_code == other.error_code
            and dict(self.details) == dict(other.details)
            and _same_number(self.retry_after, other.retry_after)
        )

    def __hash__(self) -> int:
        # Consistent with __eq__: equal errors hash equal. The details (a dict) are left out;
        # equal errors still have equal hashes, and numbers hash alike (2 and 2.0).
        return hash((type(self), self.message, self.error_code))

    def __reduce__(self) -> tuple[Any, ...]:
        state = {k: v for k, v in self.__dict__.items() if k != "details"}
        return (_unpickle, (type(self), self.message, self.error_code, dict(self.details),
                            self.retry_after, state))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(message={self.message!r}, "
                f"error_code={self.error_code!r}, details={dict(self.details)!r}"
                + (f", retry_after={self.retry_after!r}" if self.retry_after is not None else "")
                + ")")

    def __str__(self) -> str:
        return self.message


def _received_first(
    hook: Callable[[OctoLLMError], Sequence[Message]],
) -> Callable[[OctoLLMError], Sequence[Message]]:
    @functools.wraps(hook)
    def status_details(self: OctoLLMError) -> Sequence[Message]:
        received = self._received_details
        return received if received is not None else hook(self)

    return status_details


def _unpickle(
    cls: type[OctoLLMError],
    message: str,
    error_code: str,
    details: dict[str, Any],
    retry_after: float | None,
    state: dict[str, Any],
) -> OctoLLMError:
    error = cls.restore(message, error_code, details, retry_after)
    error.__dict__.update(state)
    return error


def _same_number(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=0, abs_tol=1e-9)


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(base)
    if extra:
        merged.update(extra)
    return merged


_BadRequest = error_details_pb2.BadRequest


def _field_violations(
    details: Mapping[str, Any], message: str
) -> list[error_details_pb2.BadRequest.FieldViolation]:
    items = details.get("errors")
    violations = []
    if isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping):
                violations.append(_BadRequest.FieldViolation(
                    field=str(item.get("field", "")),
                    description=str(item.get("message", "")),
                    reason=str(item.get("reason", "")),
                ))
    elif details.get("field"):
        violations.append(_BadRequest.FieldViolation(
            field=str(details["field"]), description=message))
    return violations


# -- Validation errors (4xx) -------------------------------------------------------------------


class ValidationError(OctoLLMError):
    """Client provided invalid input.

    Unlike the seed, subclasses may pass ``error_code`` and ``details`` through (the seed passed
    ``error_code`` twice, a ``TypeError`` for ``TaskNotFoundError``).
    """

    error_code = "VALIDATION_ERROR"

    def __init__(
        self,
        message: str,
        field: str | None = None,
        *,
        error_code: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message,
            error_code=error_code,
            details=_merge({"field": field} if field else {}, details),
            retry_after=retry_after,
        )

    def status_details(self) -> Sequence[Message]:
        """``BadRequest``: one field violation per item of ``details["errors"]``, or the one
        ``details["field"]`` with the message; nothing without either."""
        violations = _field_violations(self.details, self.message)
        return [_BadRequest(field_violations=violations)] if violations else []


class InvalidInputError(ValidationError):
    """Input failed validation."""

    error_code = "INVALID_INPUT"


class ValidationErrors(ValidationError):
    """Several validation errors reported at once (the seed's pattern 4).

    ``errors`` is a list of ``{"field": ..., "message": ...}``; on the wire it becomes a
    ``google.rpc.BadRequest`` with one field violation each.
    """

    error_code = "VALIDATION_ERRORS"

    def __init__(self, errors: Sequence[Mapping[str, str]]) -> None:
        items = [dict(e) for e in errors]
        super().__init__(
            f"Validation failed with {len(items)} error{'' if len(items) == 1 else 's'}",
            details={"errors": items},
        )

    @property
    def errors(self) -> list[dict[str, str]]:
        """Every violation, in the order found."""
        value = self.details.get("errors", [])
        return list(value) if isinstance(value, list) else []


class TaskNotFoundError(ValidationError):
    """Requested task does not exist."""

    error_code = "TASK_NOT_FOUND"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task {task_id} not found", details={"task_id": task_id})

    def status_details(self) -> Sequence[Message]:
        """``ResourceInfo`` naming the missing task (after ``BadRequest``, if any)."""
        return [*super().status_details(), error_details_pb2.ResourceInfo(
            resource_type="octollm.tasks.v1.Task",
            resource_name=str(self.details.get("task_id", "")),
            description=self.message)]


class AuthenticationError(ValidationError):
    """The caller is not authenticated: no credentials, or bad ones."""

    error_code = "AUTHENTICATION_ERROR"

    def __init__(self, message: str = "Authentication required", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class AuthorizationError(ValidationError):
    """The caller is authenticated but lacks the permission for this operation."""

    error_code = "AUTHORIZATION_ERROR"

    def __init__(self, message: str = "Permission denied", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class PiiDetectedError(ValidationError):
    """The input contains personal data that must not be processed (the seed's Rust code)."""

    error_code = "PII_DETECTED"

    def __init__(self, pattern: str) -> None:
        super().__init__(f"PII detected: {pattern}", details={"pattern": pattern})


class InvalidStateError(ValidationError):
    """The request is valid but the resource is not in a state that allows it.

    Not in the seed; it names gRPC's ``FAILED_PRECONDITION`` (e.g. cancelling a finished task).
    """

    error_code = "FAILED_PRECONDITION"

    def status_details(self) -> Sequence[Message]:
        """``PreconditionFailure`` of type ``STATE`` on ``details["subject"]`` (after
        ``BadRequest``, if any)."""
        _Violation = error_details_pb2.PreconditionFailure.Violation
        return [*super().status_details(), error_details_pb2.PreconditionFailure(violations=[
            _Violation(type="STATE", subject=str(self.details.get("subject", "")),
                       description=self.message)])]


# -- Resource errors ---------------------------------------------------------------------------


class ResourceError(OctoLLMError):
    """Resource unavailable or exhausted."""

    error_code = "RESOURCE_ERROR"


class ArmUnavailableError(ResourceError):
    """No suitable arm available for task."""

    error_code = "ARM_UNAVAILABLE"

    def __init__(self, required_capabilities: Sequence[str]) -> None:
        capabilities = list(required_capabilities)
        super().__init__(
            f"No arm available with capabilities: {', '.join(capabilities)}",
            details={"required_capabilities": capabilities},
        )


class CapacityExceededError(ResourceError):
    """The service is at capacity; try again later."""

    error_code = "CAPACITY_EXCEEDED"


class RateLimitError(ResourceError):
    """Rate limit exceeded."""

    error_code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, limit: int, window: int, retry_after: float) -> None:
        super().__init__(
            f"Rate limit exceeded: {limit} requests per {window}s",
            details={"limit": limit, "window": window},
            retry_after=retry_after,
        )

    def status_details(self) -> Sequence[Message]:
        """``QuotaFailure`` on ``details["key"]`` (``"caller"`` without one)."""
        return [error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(
                subject=str(self.details.get("key", "caller")), description=self.message)])]


class CircuitOpenError(ResourceError):
    """Raised on the client when a circuit breaker is open: the call never left the process.

    ``retry_after`` is the time, in seconds, until the breaker lets a probe through.
    """

    error_code = "CIRCUIT_OPEN"

    def __init__(self, target: str, retry_after: float) -> None:
        super().__init__(
            f"Circuit breaker for {target} is open; retry after {retry_after:.3f}s",
            details={"target": target},
            retry_after=retry_after,
        )


# -- System errors (5xx) ----------------------------------------------------------------------


class SystemError(OctoLLMError):  # noqa: A001 - the seed's name; shadows the builtin here only
    """Internal system error."""

    error_code = "SYSTEM_ERROR"


class InternalError(SystemError):
    """What the caller sees of an unexpected exception: a generic message, nothing internal."""

    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str = "An internal error occurred", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class DatabaseError(SystemError):
    """Database operation failed.

    As in the seed, the message and details carry ``str(original_error)``: pass an error whose
    text may be shown to callers, or wrap the driver's error first.
    """

    error_code = "DATABASE_ERROR"

    def __init__(self, operation: str, original_error: BaseException) -> None:
        super().__init__(
            f"Database {operation} failed: {original_error}",
            details={"operation": operation, "error": str(original_error)},
        )


class CacheError(SystemError):
    """Cache operation failed."""

    error_code = "CACHE_ERROR"


class NetworkError(SystemError):
    """A network operation failed (also what a bare ``UNAVAILABLE`` decodes to)."""

    error_code = "NETWORK_ERROR"


class SerializationError(SystemError):
    """Encoding or decoding a payload failed (the seed's Rust code)."""

    error_code = "SERIALIZATION_ERROR"


class TimeoutError(SystemError):  # noqa: A001 - the seed's name; shadows the builtin here only
    """Operation timed out."""

    error_code = "TIMEOUT_ERROR"

    def __init__(self, operation: str, timeout: float) -> None:
        super().__init__(
            f"{operation} timed out after {timeout}s",
            details={"operation": operation, "timeout": timeout},
        )


# -- External service errors (5xx) -------------------------------------------------------------


class ExternalError(OctoLLMError):
    """External service error."""

    error_code = "EXTERNAL_ERROR"


class LLMAPIError(ExternalError):
    """LLM API call failed."""

    error_code = "LLM_API_ERROR"

    def __init__(
        self,
        provider: str,
        status_code: int | None = None,
        error_message: str | None = None,
    ) -> None:
        super().__init__(
            f"{provider} API error: {error_message or 'Unknown error'}",
            details={
                "provider": provider,
                "status_code": status_code,
                "error_message": error_message,
            },
        )


class VectorDBError(ExternalError):
    """Vector database call failed."""

    error_code = "VECTOR_DB_ERROR"


class ThirdPartyAPIError(ExternalError):
    """A third-party API call failed."""

    error_code = "THIRD_PARTY_API_ERROR"


# -- Status errors: what a bare gRPC code says ---------------------------------------------
#
# Not in the seed. A status with no reason we know (a plain ``context.abort``, another
# service's ErrorInfo) decodes to the class its code names, so ``except ValidationError`` no
# longer catches "not found". Handlers may raise them too.


class NotFoundError(OctoLLMError):
    """A resource does not exist (``NOT_FOUND``); ``TaskNotFoundError`` is the seed's for tasks."""

    error_code = "NOT_FOUND"


class AlreadyExistsError(OctoLLMError):
    """The resource to create already exists (``ALREADY_EXISTS``)."""

    error_code = "ALREADY_EXISTS"


class AbortedError(OctoLLMError):
    """The operation lost a race with another (``ABORTED``): retry the whole transaction."""

    error_code = "ABORTED"


class OutOfRangeError(ValidationError):
    """A value is past the valid range (``OUT_OF_RANGE``), e.g. reading past the end."""

    error_code = "OUT_OF_RANGE"


class ResourceExhaustedError(ResourceError):
    """A quota or limit ran out (``RESOURCE_EXHAUSTED``); ``RateLimitError`` is the seed's."""

    error_code = "RESOURCE_EXHAUSTED"


class UnimplementedError(OctoLLMError):
    """The method is not implemented or not supported by the server (``UNIMPLEMENTED``)."""

    error_code = "UNIMPLEMENTED"


class CancelledCallError(OctoLLMError):
    """The call was cancelled (``CANCELLED``), usually by its caller."""

    error_code = "CANCELLED"


#: Python's own TimeoutError (``asyncio.TimeoutError`` is the same class since 3.11).
BuiltinTimeoutError = builtins.TimeoutError
