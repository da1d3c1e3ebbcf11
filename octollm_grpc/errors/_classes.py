"""The classes of the hierarchy, with the standard's names, codes and signatures."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.message import Message
from google.rpc import error_details_pb2

from octollm_grpc.errors._base import OctoLLMError, _merge

# SystemError and TimeoutError are left out: star-importing them would shadow Python's
# builtins (the errors package exports them, by name).
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
    "ExternalError",
    "InternalError",
    "InvalidInputError",
    "InvalidStateError",
    "LLMAPIError",
    "NetworkError",
    "NotFoundError",
    "OutOfRangeError",
    "PiiDetectedError",
    "RateLimitError",
    "ResourceError",
    "ResourceExhaustedError",
    "SerializationError",
    "TaskNotFoundError",
    "ThirdPartyAPIError",
    "UnimplementedError",
    "ValidationError",
    "ValidationErrors",
    "VectorDBError",
]


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

    Unlike the standard's example code, subclasses may pass ``error_code`` and ``details``
    through (that code passed ``error_code`` twice, a ``TypeError`` for ``TaskNotFoundError``).

    Args:
        message: What went wrong, for people.
        field: The offending field (a ``BadRequest`` field violation).
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
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
    """Input failed validation.

    Args:
        message: What went wrong, for people.
        field: The offending field (a ``BadRequest`` field violation).
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "INVALID_INPUT"


class ValidationErrors(ValidationError):
    """Several validation errors reported at once (the standard's pattern 4).

    ``errors`` is a list of ``{"field": ..., "message": ...}``; on the wire it becomes a
    ``google.rpc.BadRequest`` with one field violation each.

    Args:
        errors: One mapping per violation, each with ``field`` and ``message``.
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
    """Requested task does not exist.

    Args:
        task_id: The task that was not found.
    """

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
    """The caller is not authenticated: no credentials, or bad ones.

    Args:
        message: What went wrong, for people.
        **kwargs: ``error_code``, ``details`` and ``retry_after``, as for `OctoLLMError`.
    """

    error_code = "AUTHENTICATION_ERROR"

    def __init__(self, message: str = "Authentication required", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class AuthorizationError(ValidationError):
    """The caller is authenticated but lacks the permission for this operation.

    Args:
        message: What went wrong, for people.
        **kwargs: ``error_code``, ``details`` and ``retry_after``, as for `OctoLLMError`.
    """

    error_code = "AUTHORIZATION_ERROR"

    def __init__(self, message: str = "Permission denied", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class PiiDetectedError(ValidationError):
    """The input contains personal data that must not be processed (the standard's Rust code).

    Args:
        pattern: The kind of personal data found.
    """

    error_code = "PII_DETECTED"

    def __init__(self, pattern: str) -> None:
        super().__init__(f"PII detected: {pattern}", details={"pattern": pattern})


class InvalidStateError(ValidationError):
    """The request is valid but the resource is not in a state that allows it.

    Not in the standard; it names gRPC's ``FAILED_PRECONDITION`` (e.g. cancelling a finished task).

    Args:
        message: What went wrong, for people.
        field: The offending field (a ``BadRequest`` field violation).
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
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
    """Resource unavailable or exhausted.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "RESOURCE_ERROR"


class ArmUnavailableError(ResourceError):
    """No suitable arm available for task.

    Args:
        required_capabilities: What the task needed.
    """

    error_code = "ARM_UNAVAILABLE"

    def __init__(self, required_capabilities: Sequence[str]) -> None:
        capabilities = list(required_capabilities)
        super().__init__(
            f"No arm available with capabilities: {', '.join(capabilities)}",
            details={"required_capabilities": capabilities},
        )


class CapacityExceededError(ResourceError):
    """The service is at capacity; try again later.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "CAPACITY_EXCEEDED"


class RateLimitError(ResourceError):
    """Rate limit exceeded.

    Args:
        limit: Calls allowed per window.
        window: The window, in seconds.
        retry_after: Seconds the caller should wait before retrying.
    """

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

    ``retry_after`` is the time, in seconds, until the breaker lets a probe through. A peer's
    ``CIRCUIT_OPEN`` status decodes as `ResourceError` (``error_code`` kept), never as
    this class.

    Args:
        target: The target (or breaker name) whose breaker is open.
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "CIRCUIT_OPEN"

    def __init__(self, target: str, retry_after: float) -> None:
        super().__init__(
            f"Circuit breaker for {target} is open; retry after {retry_after:.3f}s",
            details={"target": target},
            retry_after=retry_after,
        )


# -- System errors (5xx) ----------------------------------------------------------------------


class SystemError(OctoLLMError):  # noqa: A001 - the standard's name; shadows the builtin here only
    """Internal system error.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "SYSTEM_ERROR"


class InternalError(SystemError):
    """What the caller sees of an unexpected exception: a generic message, nothing internal.

    Args:
        message: What went wrong, for people.
        **kwargs: ``error_code``, ``details`` and ``retry_after``, as for `OctoLLMError`.
    """

    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str = "An internal error occurred", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class DatabaseError(SystemError):
    """Database operation failed.

    As in the standard, the message and details carry ``str(original_error)``: pass an error whose
    text may be shown to callers, or wrap the driver's error first.

    Args:
        operation: The operation that failed.
        original_error: The driver's exception (kept as ``__cause__``).
    """

    error_code = "DATABASE_ERROR"

    def __init__(self, operation: str, original_error: BaseException) -> None:
        super().__init__(
            f"Database {operation} failed: {original_error}",
            details={"operation": operation, "error": str(original_error)},
        )


class CacheError(SystemError):
    """Cache operation failed.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "CACHE_ERROR"


class NetworkError(SystemError):
    """A network operation failed (also what a bare ``UNAVAILABLE`` decodes to).

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "NETWORK_ERROR"


class SerializationError(SystemError):
    """Encoding or decoding a payload failed (the standard's Rust code).

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "SERIALIZATION_ERROR"


class TimeoutError(SystemError):  # noqa: A001 - the standard's name; shadows the builtin here only
    """Operation timed out.

    Args:
        operation: The operation that failed.
        timeout: The time allowed, in seconds.
    """

    error_code = "TIMEOUT_ERROR"

    def __init__(self, operation: str, timeout: float) -> None:
        super().__init__(
            f"{operation} timed out after {timeout}s",
            details={"operation": operation, "timeout": timeout},
        )


# -- External service errors (5xx) -------------------------------------------------------------


class ExternalError(OctoLLMError):
    """External service error.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "EXTERNAL_ERROR"


class LLMAPIError(ExternalError):
    """LLM API call failed.

    Args:
        provider: The LLM provider.
        status_code: The provider's HTTP status, if any.
        error_message: The provider's error text, if any.
    """

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
    """Vector database call failed.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "VECTOR_DB_ERROR"


class ThirdPartyAPIError(ExternalError):
    """A third-party API call failed.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "THIRD_PARTY_API_ERROR"


# -- Status errors: what a bare gRPC code says ---------------------------------------------
#
# Not in the standard. A status with no reason we know (a plain ``context.abort``, another
# service's ErrorInfo) decodes to the class its code names, so ``except ValidationError`` no
# longer catches "not found". Handlers may raise them too.


class NotFoundError(OctoLLMError):
    """A resource does not exist (``NOT_FOUND``); ``TaskNotFoundError`` is the standard's for tasks.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "NOT_FOUND"


class AlreadyExistsError(OctoLLMError):
    """The resource to create already exists (``ALREADY_EXISTS``).

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "ALREADY_EXISTS"


class AbortedError(OctoLLMError):
    """The operation lost a race with another (``ABORTED``): retry the whole transaction.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "ABORTED"


class OutOfRangeError(ValidationError):
    """A value is past the valid range (``OUT_OF_RANGE``), e.g. reading past the end.

    Args:
        message: What went wrong, for people.
        field: The offending field (a ``BadRequest`` field violation).
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "OUT_OF_RANGE"


class ResourceExhaustedError(ResourceError):
    """A quota or limit ran out (``RESOURCE_EXHAUSTED``); ``RateLimitError`` is the standard's.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "RESOURCE_EXHAUSTED"


class MessageTooLargeError(ResourceExhaustedError):
    """A message over its receiver's size limit: gRPC's own ``RESOURCE_EXHAUSTED``.

    Not in ``__all__``: callers meet it as a `ResourceExhaustedError` whose ``error_code`` is
    ``MESSAGE_TOO_LARGE``. Sending the same message again cannot succeed, so the standard's
    retry helpers do not retry it (registered ``retryable=False``), and a gateway answers 413.
    ``details`` holds ``size`` and ``limit`` in bytes when gRPC said them.
    """

    error_code = "MESSAGE_TOO_LARGE"


class MetadataTooLargeError(ResourceExhaustedError):
    """Metadata (headers) over its receiver's size limit: gRPC's own ``RESOURCE_EXHAUSTED``.

    Not in ``__all__``, like `MessageTooLargeError`: ``error_code`` ``METADATA_TOO_LARGE``, not
    retried by the standard's retry helpers, 431 at a gateway.
    """

    error_code = "METADATA_TOO_LARGE"


class UnimplementedError(OctoLLMError):
    """The method is not implemented or not supported by the server (``UNIMPLEMENTED``).

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "UNIMPLEMENTED"


class CancelledCallError(OctoLLMError):
    """The call was cancelled (``CANCELLED``), usually by its caller.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code = "CANCELLED"


#: Python's own TimeoutError (``asyncio.TimeoutError`` is the same class since 3.11).
BuiltinTimeoutError = builtins.TimeoutError
