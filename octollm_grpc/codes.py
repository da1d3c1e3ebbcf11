"""Two tables: what each gRPC status code means to every consumer, and which code, HTTP
status and retryability each exception class has.

``CODE_BEHAVIOUR`` says once, for each of the 17 status codes, whether it is the caller's
fault or the server's (the log level), whether the gRPC client retries it by default, whether
it is retried only on the server's pushback, whether ``resilience.retry`` retries it and whether
it counts as a breaker failure. Every default elsewhere is computed from it
(``RetryPolicy.retryable_codes`` and ``pushback_codes``, ``BreakerSettings.failure_codes``, the
server's log level for a status, [`register`][octollm_grpc.codes.register]'s ``retryable``), and the
catalog prints it.

Class lookup walks the exception's MRO, so the most specific registered class wins whatever
order the table was written in (the standard's ``isinstance`` chain sent ``TaskNotFoundError``
to 400 because it tested ``ValidationError`` first). Users add their own subclasses with
[`register`][octollm_grpc.codes.register], and map exceptions they do not own with
``map_exception``.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar, overload

import grpc

from octollm_grpc import errors as e
from octollm_grpc._core.log import get_logger
from octollm_grpc.errors import _base, _classes

__all__ = [
    "ErrorMapping",
    "map_exception",
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

Fault = Literal["none", "client", "server"]


@dataclass(frozen=True, slots=True)
class CodeBehaviour:
    """What one status code means to each consumer of it (one row of ``CODE_BEHAVIOUR``).

    Args:
        code: The status code.
        fault: ``"client"`` (the caller's fault: logged at warning), ``"server"`` (logged at
            error) or ``"none"`` (``OK``).
        client_retry: In ``RetryPolicy.retryable_codes`` by default: the gRPC client resends
            the same request.
        pushback_retry: In ``RetryPolicy.pushback_codes`` by default: resent only when the
            server said when (``grpc-retry-pushback-ms`` or ``RetryInfo``).
        helper_retry: ``resilience.retry`` / ``retry_with_backoff`` retry an error of this
            code (the default ``retryable`` of a class registered with it).
        breaker_failure: In ``BreakerSettings.failure_codes`` by default.
        why: Why consumers treat it differently, where they do.
    """

    code: grpc.StatusCode
    fault: Fault
    client_retry: bool
    pushback_retry: bool
    helper_retry: bool
    breaker_failure: bool
    why: str = ""

    @property
    def pushback_honoured(self) -> bool:
        """Whether the gRPC client waits as the server says before resending this code."""
        return self.client_retry or self.pushback_retry

    @property
    def level(self) -> Literal["warning", "error"]:
        """The log level of a failed call ending with this code."""
        return "warning" if self.fault == "client" else "error"


_B = CodeBehaviour
#: The one table of code behaviour, in the codes' numeric order. Columns: fault, gRPC client
#: retry, retry on pushback only, resilience.retry, breaker failure, why they differ.
CODE_BEHAVIOUR: tuple[CodeBehaviour, ...] = (
    _B(_C.OK, "none", False, False, False, False, "success: nothing to retry or count"),
    _B(_C.CANCELLED, "client", False, False, False, False,
       "the caller's own cancellation: never retried, and no breaker verdict either way"),
    _B(_C.UNKNOWN, "server", False, False, False, True,
       "the request may have been applied: not resent blindly, but the server is failing"),
    _B(_C.INVALID_ARGUMENT, "client", False, False, False, False),
    _B(_C.DEADLINE_EXCEEDED, "server", False, False, False, True,
       "the call's deadline covers every attempt, so the client does not retry it (only an "
       "attempt cut by per_attempt_timeout is retried); a slow server counts against it"),
    _B(_C.NOT_FOUND, "client", False, False, False, False),
    _B(_C.ALREADY_EXISTS, "client", False, False, False, False),
    _B(_C.PERMISSION_DENIED, "client", False, False, False, False),
    _B(_C.RESOURCE_EXHAUSTED, "client", False, True, True, False,
       "a quota or load refusal: the client resends only when the server says when, "
       "resilience.retry retries the caller's operation waiting retry_after when the error "
       "has one (but never gRPC's own size refusals, MESSAGE_TOO_LARGE and "
       "METADATA_TOO_LARGE: the same call cannot succeed); the server is up and answering, "
       "so not a breaker failure"),
    _B(_C.FAILED_PRECONDITION, "client", False, False, False, False),
    _B(_C.ABORTED, "client", False, False, True, False,
       "gRPC's rule: retry at a higher level (restart the read-modify-write); resending the "
       "same request cannot succeed, so the client does not, while resilience.retry re-runs "
       "the caller's whole operation, which can"),
    _B(_C.OUT_OF_RANGE, "client", False, False, False, False),
    _B(_C.UNIMPLEMENTED, "server", False, False, False, False,
       "the server answered that it has no such method: retrying or tripping cannot help"),
    _B(_C.INTERNAL, "server", False, False, False, True,
       "the request may have been applied: not resent blindly, but the server is failing"),
    _B(_C.UNAVAILABLE, "server", True, False, True, True,
       "the request was not processed: safe to resend, by the client and by the helpers"),
    _B(_C.DATA_LOSS, "server", False, False, False, True),
    _B(_C.UNAUTHENTICATED, "client", False, False, False, False),
)
del _B

_BEHAVIOUR: dict[grpc.StatusCode, CodeBehaviour] = {row.code: row for row in CODE_BEHAVIOUR}


def behaviour(code: grpc.StatusCode) -> CodeBehaviour:
    """The ``CODE_BEHAVIOUR`` row of ``code``."""
    return _BEHAVIOUR[code]


def _codes_where(column: Callable[[CodeBehaviour], bool]) -> frozenset[grpc.StatusCode]:
    return frozenset(row.code for row in CODE_BEHAVIOUR if column(row))


#: ``RetryPolicy.retryable_codes``'s default.
CLIENT_RETRIED = _codes_where(lambda row: row.client_retry)
#: ``RetryPolicy.pushback_codes``'s default.
PUSHBACK_RETRIED = _codes_where(lambda row: row.pushback_retry)
#: ``BreakerSettings.failure_codes``'s default.
BREAKER_FAILURES = _codes_where(lambda row: row.breaker_failure)
#: Codes logged at warning by the server (the caller's fault).
CLIENT_FAULTS = _codes_where(lambda row: row.fault == "client")

#: What any exception outside the hierarchy becomes: no text of it reaches the caller.
UNEXPECTED = ErrorMapping("INTERNAL_ERROR", _C.INTERNAL, 500, _BEHAVIOUR[_C.INTERNAL].helper_retry,
                          False)
#: Python's builtin ``TimeoutError`` (and so ``asyncio.TimeoutError``).
BUILTIN_TIMEOUT = ErrorMapping("TIMEOUT_ERROR", _C.DEADLINE_EXCEEDED, 504,
                               _BEHAVIOUR[_C.DEADLINE_EXCEEDED].helper_retry, False)

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
    retryable: bool | None = None,
    client_error: bool | None = None,
) -> type[e.OctoLLMError]:
    """Map ``cls`` (and its subclasses that are not registered themselves) to a status.

    ``cls.error_code`` must be unique among registered classes: it is how a client picks the
    class to rebuild. ``retryable`` defaults to what ``CODE_BEHAVIOUR`` says
    ``resilience.retry`` does with ``grpc_code``; ``client_error`` to ``http_status < 500``.
    It is a plain call, not a decorator: call it after the class statement,
    ``register(MyError, StatusCode.ABORTED, 409)``. It returns ``cls`` so the call can also
    sit in an expression.

    Args:
        cls: An `OctoLLMError` subclass.
        grpc_code: The status code it travels as.
        http_status: The HTTP status a gateway answers with.
        retryable: Whether the standard's retry helpers retry it (default: the code's
            ``helper_retry`` in ``CODE_BEHAVIOUR``).
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
            _BEHAVIOUR[grpc_code].helper_retry if retryable is None else retryable,
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
    """The mapping for an exception instance (see `mapping_for_class`).

    Args:
        exc: Any exception.

    Returns:
        Its class's [`ErrorMapping`][octollm_grpc.codes.ErrorMapping] (the nearest registered base
        class's).
    """
    return mapping_for_class(type(exc))


X = TypeVar("X", bound=BaseException)
#: Turns an exception the application does not own into the ``OctoLLMError`` to send.
Converter = Callable[[X], e.OctoLLMError]

_log = get_logger("octollm_grpc.codes")
_converters: dict[type[BaseException], Callable[[BaseException], e.OctoLLMError]] = {}
# Resolved converter lookups per concrete class (None: no converter applies).
_converter_for: dict[type[BaseException], Callable[[BaseException], e.OctoLLMError] | None] = {}


@overload
def map_exception(exc_type: type[X]) -> Callable[[Converter[X]], Converter[X]]: ...


@overload
def map_exception(exc_type: type[X], converter: Converter[X]) -> Converter[X]: ...


def map_exception(
    exc_type: type[X], converter: Converter[X] | None = None
) -> Converter[X] | Callable[[Converter[X]], Converter[X]]:
    """Send ``exc_type`` (and its subclasses) as the ``OctoLLMError`` ``converter`` returns.

    For exceptions the application does not own (``sqlite3.IntegrityError``, ``KeyError``):
    when a handler raises one, the server interceptors (sync and aio, every RPC shape) and the
    FastAPI handlers send ``converter(exc)`` instead, with that error's code, message and
    details. The most specific class in the exception's MRO wins, registered
    ``OctoLLMError`` classes included, so errors of ours keep their mapping. A converter that
    raises, or returns something that is not an ``OctoLLMError``, gives ``INTERNAL`` with the
    generic message (nothing of either exception is sent) and its failure is logged
    (``exception_converter_failed``). Registering a type again replaces its converter.

    Use it as a call, ``map_exception(KeyError, lambda exc: NotFoundError(...))``, or as a
    decorator on the converter, ``@map_exception(KeyError)``.

    Args:
        exc_type: An exception class that is not an ``OctoLLMError`` (register those with
            [`register`][octollm_grpc.codes.register]).
        converter: Called with the exception; returns the error to send. Omitted: a
            decorator that registers the function it decorates.

    Returns:
        ``converter`` (or, without it, the decorator, which returns the function unchanged).

    Raises:
        TypeError: ``exc_type`` is not an exception class, is an ``OctoLLMError`` subclass, or
            ``converter`` is not callable.
    """
    if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
        raise TypeError(f"map_exception() takes an exception class, not {exc_type!r}")
    if issubclass(exc_type, e.OctoLLMError):
        raise TypeError(f"{exc_type.__qualname__} is an OctoLLMError: use register() for it")
    if converter is None:
        def decorator(func: Converter[X]) -> Converter[X]:
            return map_exception(exc_type, func)
        return decorator
    if not callable(converter):
        raise TypeError(f"converter must be callable, not {converter!r}")
    with _lock:
        _converters[exc_type] = converter  # type: ignore[assignment]
        _converter_for.clear()
    return converter


class ConverterFailed(Exception):
    """What a failed ``map_exception`` converter leaves: sent as ``INTERNAL``, generic."""


def converted(exc: BaseException) -> BaseException:
    """``exc`` as its ``map_exception`` converter makes it, else ``exc`` unchanged.

    A registered ``OctoLLMError`` class nearer in the MRO than any mapped type wins (``exc``
    is returned). A converter that raises or returns a non-``OctoLLMError`` gives a
    ``ConverterFailed`` (logged), which every boundary sends as ``INTERNAL``.
    """
    if not _converters:
        return exc  # the common case: nothing mapped, no lookup
    cls = type(exc)
    try:
        converter = _converter_for[cls]
    except KeyError:
        converter = None
        for klass in cls.__mro__:
            if klass in _by_class:
                break  # one of ours, registered: its own mapping wins
            found = _converters.get(klass)
            if found is not None:
                converter = found
                break
        _converter_for[cls] = converter
    if converter is None:
        return exc
    try:
        result = converter(exc)
        if not isinstance(result, e.OctoLLMError):
            raise TypeError(f"the converter returned {type(result).__name__}, "
                            "not an OctoLLMError")
    except Exception as failure:  # noqa: BLE001 - a broken converter must not break the call
        _log.error("exception_converter_failed", exception_type=cls.__qualname__,
                   converter=getattr(converter, "__qualname__", repr(converter)),
                   exc_info=failure)
        failed = ConverterFailed("the exception converter failed")
        failed.__cause__ = failure
        failed.__context__ = exc
        return failed
    if result.__cause__ is None:
        result.__cause__ = exc  # the log's traceback shows what was converted
    return result


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


# The built-in rows (class, gRPC code, HTTP status), registered at import; retryable comes from
# CODE_BEHAVIOUR. Data, not a function body: `make mutation` cannot exercise code run at
# import; test_codes.py pins rows.
_BUILTIN: tuple[tuple[type[e.OctoLLMError], grpc.StatusCode, int], ...] = (
    (e.OctoLLMError, _C.UNKNOWN, 500),
    (e.ValidationError, _C.INVALID_ARGUMENT, 400),
    (e.InvalidInputError, _C.INVALID_ARGUMENT, 400),
    (e.ValidationErrors, _C.INVALID_ARGUMENT, 400),
    (e.TaskNotFoundError, _C.NOT_FOUND, 404),
    (e.AuthenticationError, _C.UNAUTHENTICATED, 401),
    (e.AuthorizationError, _C.PERMISSION_DENIED, 403),
    (e.PiiDetectedError, _C.INVALID_ARGUMENT, 400),
    (e.InvalidStateError, _C.FAILED_PRECONDITION, 400),
    (e.ResourceError, _C.UNAVAILABLE, 503),
    (e.ArmUnavailableError, _C.UNAVAILABLE, 503),
    (e.CapacityExceededError, _C.UNAVAILABLE, 503),
    (e.RateLimitError, _C.RESOURCE_EXHAUSTED, 429),
    (e.CircuitOpenError, _C.UNAVAILABLE, 503),
    (e.SystemError, _C.INTERNAL, 500),
    (e.InternalError, _C.INTERNAL, 500),
    (e.DatabaseError, _C.INTERNAL, 500),
    (e.CacheError, _C.INTERNAL, 500),
    (e.SerializationError, _C.INTERNAL, 500),
    (e.NetworkError, _C.UNAVAILABLE, 502),
    (e.TimeoutError, _C.DEADLINE_EXCEEDED, 504),
    (e.ExternalError, _C.UNAVAILABLE, 502),
    (e.LLMAPIError, _C.UNAVAILABLE, 502),
    (e.VectorDBError, _C.UNAVAILABLE, 502),
    (e.ThirdPartyAPIError, _C.UNAVAILABLE, 502),
    (e.NotFoundError, _C.NOT_FOUND, 404),
    (e.AlreadyExistsError, _C.ALREADY_EXISTS, 409),
    (e.AbortedError, _C.ABORTED, 409),
    (e.OutOfRangeError, _C.OUT_OF_RANGE, 400),
    (e.ResourceExhaustedError, _C.RESOURCE_EXHAUSTED, 429),
    (e.UnimplementedError, _C.UNIMPLEMENTED, 501),
    (e.CancelledCallError, _C.CANCELLED, 499),
)
for _row in _BUILTIN:
    register(*_row)
del _row
# gRPC's own size refusals (status._decode rebuilds them from grpc core's text): resending the
# same message or metadata cannot succeed, so unlike other RESOURCE_EXHAUSTED they are final.
register(_classes.MessageTooLargeError, _C.RESOURCE_EXHAUSTED, 413, retryable=False)
register(_classes.MetadataTooLargeError, _C.RESOURCE_EXHAUSTED, 431, retryable=False)
_base.install_code_lookup(lambda exc: mapping_for(exc).grpc_code)
