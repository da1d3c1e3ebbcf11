"""One table from exception class to gRPC code, HTTP status and retryability.

Lookup walks the exception's MRO, so the most specific registered class wins whatever order the
table was written in (the seed's ``isinstance`` chain sent ``TaskNotFoundError`` to 400 because
it tested ``ValidationError`` first). Users add their own subclasses with :func:`register`.
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass

import grpc

from octollm_grpc import errors as e
from octollm_grpc.errors import _base

__all__ = [
    "ErrorMapping",
    "mapping_for",
    "register",
]


@dataclass(frozen=True, slots=True)
class ErrorMapping:
    """How one class of error is reported: on gRPC, over HTTP, and whether to retry it.

    Args:
        error_code: The class's ``error_code``.
        grpc_code: The status code it travels as.
        http_status: The HTTP status a gateway answers with.
        retryable: Whether the standard's retry helpers retry it.
        client_error: The caller's fault: logged as a warning, not an error.
    """

    error_code: str
    grpc_code: grpc.StatusCode
    http_status: int
    retryable: bool
    client_error: bool
    """True for errors the caller caused (logged at warning, not error)."""


_C = grpc.StatusCode

#: What any exception outside the hierarchy becomes: no text of it reaches the caller.
UNEXPECTED = ErrorMapping("INTERNAL_ERROR", _C.INTERNAL, 500, False, False)
#: Python's builtin ``TimeoutError`` (and so ``asyncio.TimeoutError``).
BUILTIN_TIMEOUT = ErrorMapping("TIMEOUT_ERROR", _C.DEADLINE_EXCEEDED, 504, False, False)

_lock = threading.Lock()
_by_class: dict[type[BaseException], ErrorMapping] = {}
_by_error_code: dict[str, type[e.OctoLLMError]] = {}
# Resolved lookups, one per concrete class: the MRO walk happens once per class, not per error.
_resolved: dict[type[BaseException], ErrorMapping] = {}


def register(
    cls: type[e.OctoLLMError],
    grpc_code: grpc.StatusCode,
    http_status: int,
    *,
    retryable: bool = False,
    client_error: bool | None = None,
) -> type[e.OctoLLMError]:
    """Map ``cls`` (and its subclasses that are not registered themselves) to a status.

    ``cls.error_code`` must be unique among registered classes: it is how a client picks the
    class to rebuild. ``client_error`` defaults to ``http_status < 500``. Returns ``cls``, so it
    also works as a decorator factory's target: ``register(MyError, StatusCode.ABORTED, 409)``.

    Args:
        cls: An :class:`~octollm_grpc.errors.OctoLLMError` subclass.
        grpc_code: The status code it travels as.
        http_status: The HTTP status a gateway answers with.
        retryable: Whether the standard's retry helpers retry it.
        client_error: The caller's fault (logged as a warning); default ``http_status < 500``.

    Returns:
        ``cls``.

    Raises:
        TypeError: ``cls`` is not an ``OctoLLMError`` subclass.
        ValueError: Its ``error_code`` is taken by another registered class, ``grpc_code``
            is ``OK`` or not a status code, or ``http_status`` is not 4xx/5xx.
    """
    if not (isinstance(cls, type) and issubclass(cls, e.OctoLLMError)):
        raise TypeError(f"register() takes an OctoLLMError subclass, not {cls!r}")
    if not isinstance(grpc_code, grpc.StatusCode) or grpc_code is _C.OK:
        raise ValueError(f"grpc_code must be a non-OK grpc.StatusCode, not {grpc_code!r}")
    if not 400 <= http_status <= 599:
        raise ValueError(f"http_status must be a 4xx or 5xx status, not {http_status!r}")
    code = cls.error_code
    with _lock:
        owner = _by_error_code.get(code)
        if owner is not None and owner is not cls:
            raise ValueError(
                f"error_code {code!r} of {cls.__qualname__} is already used by "
                f"{owner.__qualname__}; give the class its own error_code"
            )
        _by_error_code[code] = cls
        _by_class[cls] = ErrorMapping(
            code,
            grpc_code,
            http_status,
            retryable,
            http_status < 500 if client_error is None else client_error,
        )
        _resolved.clear()
    return cls


def mapping_for_class(cls: type[BaseException]) -> ErrorMapping:
    """The mapping of the most specific registered class in ``cls``'s MRO."""
    found = _resolved.get(cls)
    if found is not None:
        return found
    for klass in cls.__mro__:
        mapping = _by_class.get(klass)
        if mapping is not None:
            break
    else:
        mapping = BUILTIN_TIMEOUT if issubclass(cls, builtins.TimeoutError) else UNEXPECTED
    _resolved[cls] = mapping
    return mapping


def mapping_for(exc: BaseException) -> ErrorMapping:
    """The mapping for an exception instance (see :func:`mapping_for_class`).

    Args:
        exc: Any exception.

    Returns:
        Its class's :class:`ErrorMapping` (the nearest registered base class's).
    """
    return mapping_for_class(type(exc))


def class_for_error_code(error_code: str) -> type[e.OctoLLMError] | None:
    """The registered class whose ``error_code`` this is, if any."""
    return _by_error_code.get(error_code)


def registered() -> list[tuple[type[e.OctoLLMError], ErrorMapping]]:
    """Every registered class with its mapping, in registration order."""
    with _lock:
        return [(cls, m) for cls, m in _by_class.items() if issubclass(cls, e.OctoLLMError)]


# What a status with no (or an unknown) reason decodes to: the class its code names.
_FALLBACK: dict[grpc.StatusCode, type[e.OctoLLMError]] = {
    _C.CANCELLED: e.CancelledCallError,
    _C.INVALID_ARGUMENT: e.ValidationError,
    _C.OUT_OF_RANGE: e.OutOfRangeError,
    _C.NOT_FOUND: e.NotFoundError,
    _C.ALREADY_EXISTS: e.AlreadyExistsError,
    _C.FAILED_PRECONDITION: e.InvalidStateError,
    _C.ABORTED: e.AbortedError,
    _C.UNAUTHENTICATED: e.AuthenticationError,
    _C.PERMISSION_DENIED: e.AuthorizationError,
    _C.RESOURCE_EXHAUSTED: e.ResourceExhaustedError,
    _C.UNIMPLEMENTED: e.UnimplementedError,
    _C.UNAVAILABLE: e.NetworkError,
    _C.DEADLINE_EXCEEDED: e.TimeoutError,
}


def class_for_status_code(code: grpc.StatusCode) -> type[e.OctoLLMError]:
    """The class a bare status of this code decodes to (``SystemError`` when nothing fits)."""
    return _FALLBACK.get(code, e.SystemError)


# The built-in rows (class, gRPC code, HTTP status, retryable), registered at import. Data, not
# a function body: `make mutation` cannot exercise code run at import; test_codes.py pins rows.
_BUILTIN: tuple[tuple[type[e.OctoLLMError], grpc.StatusCode, int, bool], ...] = (
    (e.OctoLLMError, _C.UNKNOWN, 500, False),
    (e.ValidationError, _C.INVALID_ARGUMENT, 400, False),
    (e.InvalidInputError, _C.INVALID_ARGUMENT, 400, False),
    (e.ValidationErrors, _C.INVALID_ARGUMENT, 400, False),
    (e.TaskNotFoundError, _C.NOT_FOUND, 404, False),
    (e.AuthenticationError, _C.UNAUTHENTICATED, 401, False),
    (e.AuthorizationError, _C.PERMISSION_DENIED, 403, False),
    (e.PiiDetectedError, _C.INVALID_ARGUMENT, 400, False),
    (e.InvalidStateError, _C.FAILED_PRECONDITION, 400, False),
    (e.ResourceError, _C.UNAVAILABLE, 503, True),
    (e.ArmUnavailableError, _C.UNAVAILABLE, 503, True),
    (e.CapacityExceededError, _C.UNAVAILABLE, 503, True),
    (e.RateLimitError, _C.RESOURCE_EXHAUSTED, 429, True),
    (e.CircuitOpenError, _C.UNAVAILABLE, 503, True),
    (e.SystemError, _C.INTERNAL, 500, False),
    (e.InternalError, _C.INTERNAL, 500, False),
    (e.DatabaseError, _C.INTERNAL, 500, False),
    (e.CacheError, _C.INTERNAL, 500, False),
    (e.SerializationError, _C.INTERNAL, 500, False),
    (e.NetworkError, _C.UNAVAILABLE, 502, True),
    (e.TimeoutError, _C.DEADLINE_EXCEEDED, 504, False),
    (e.ExternalError, _C.UNAVAILABLE, 502, True),
    (e.LLMAPIError, _C.UNAVAILABLE, 502, True),
    (e.VectorDBError, _C.UNAVAILABLE, 502, True),
    (e.ThirdPartyAPIError, _C.UNAVAILABLE, 502, True),
    (e.NotFoundError, _C.NOT_FOUND, 404, False),
    (e.AlreadyExistsError, _C.ALREADY_EXISTS, 409, False),
    (e.AbortedError, _C.ABORTED, 409, True),
    (e.OutOfRangeError, _C.OUT_OF_RANGE, 400, False),
    (e.ResourceExhaustedError, _C.RESOURCE_EXHAUSTED, 429, True),
    (e.UnimplementedError, _C.UNIMPLEMENTED, 501, False),
    (e.CancelledCallError, _C.CANCELLED, 499, False),
)
for _row in _BUILTIN:
    register(*_row[:3], retryable=_row[3])
del _row
_base.install_code_lookup(lambda exc: mapping_for(exc).grpc_code)
