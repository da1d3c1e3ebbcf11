"""The base of the hierarchy: `OctoLLMError` and its callable `ErrorDetails`."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2

__all__ = ["ErrorDetails", "OctoLLMError"]

# octollm_grpc.codes (which imports this module, never the other way round) installs the
# mapping's lookup here when it is imported; importing octollm_grpc imports it.
_code_of: Callable[[BaseException], grpc.StatusCode]


# ErrorInfo's domain and metadata of a raised error, as the status package sends them (installed
# by octollm_grpc.status at import: errors sits below status and must not import it).
_info_domain = "octollm.grpc"


def _str_metadata(details: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in details.items()}


_info_metadata: Callable[[Mapping[str, Any]], dict[str, str]] = _str_metadata


def install_error_info(domain: str, metadata: Callable[[Mapping[str, Any]], dict[str, str]]
                       ) -> None:
    """Set the domain and the details -> ``ErrorInfo.metadata`` rule (``octollm_grpc.status``)."""
    global _info_domain, _info_metadata
    _info_domain = domain
    _info_metadata = metadata


def install_code_lookup(lookup: Callable[[BaseException], grpc.StatusCode]) -> None:
    """Set how a local error finds its status code (called once, by ``octollm_grpc.codes``)."""
    global _code_of
    _code_of = lookup


class ErrorDetails(dict[str, Any]):
    """The error's details: a plain ``dict`` that, called, returns the error message.

    ``grpc.RpcError`` handlers call ``e.details()`` for the message; standard-style code reads
    ``e.details["task_id"]``. Both work on the same attribute.

    Args:
        data: The details.
        message: What ``details()`` returns (the error's message).
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
    attribute needs no ``__init__``. A subclass with neither an ``error_code`` of its own nor
    a registration travels as its parent: the parent's reason, code and HTTP status, decoded
    to the parent's class by the caller.

    Args:
        message: What went wrong, for people.
        error_code: Replaces the class's ``error_code`` on this instance.
        details: Machine-readable context (``ErrorInfo.metadata`` on the wire).
        retry_after: Seconds the caller should wait before retrying.
    """

    error_code: str = "UNKNOWN_ERROR"
    """The class's stable machine-readable code; instances may carry another."""

    #: Filled in by [`octollm_grpc.status.from_rpc_error`][octollm_grpc.status.from_rpc_error] for
    #: an error that came over the
    #: wire; ``None`` for one raised locally (then ``code()`` comes from the mapping table).
    _wire_code: grpc.StatusCode | None = None
    _trailing_metadata: Any = None
    _initial_metadata: Any = None
    _debug_error_string: str = ""
    #: The request id the server reported (``RequestInfo``), for errors that came over the wire.
    request_id: str | None = None
    #: The decoded ``google.rpc.Status`` of an error that came over the wire, else ``None``.
    rich_status: status_pb2.Status | None = None
    #: ErrorInfo's (reason, domain, metadata) as received; ``None`` for a local error.
    _error_info: tuple[str | None, str | None, dict[str, str]] | None = None

    details: ErrorDetails  # a dict and a method at once, see the module docstring
    #: The class's own details a decoded error arrived with (see `status_details`).
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

        A decoded error (from
        [`octollm_grpc.status.from_rpc_error`][octollm_grpc.status.from_rpc_error]) answers with the
        details that arrived other than those five, unpacked to their generated classes when
        the default descriptor pool knows the type, else as the ``Any``, even when its class
        overrides this method; so re-raising it sends the same details on.
        """
        return self._received_details or ()

    # -- google.rpc.ErrorInfo's fields, as google-api-core exposes them ------------------

    @property
    def reason(self) -> str | None:
        """``ErrorInfo.reason``: the one received, else (a local error) its ``error_code``.

        ``None`` for a decoded error whose status carried no ``ErrorInfo``.
        """
        return self.error_code if self._error_info is None else self._error_info[0]

    @property
    def domain(self) -> str | None:
        """``ErrorInfo.domain``: the one received, else the library's (``"octollm.grpc"``).

        A server configured with another domain sends that one. ``None`` for a decoded error
        whose status carried no ``ErrorInfo``.
        """
        return _info_domain if self._error_info is None else self._error_info[1]

    @property
    def metadata(self) -> dict[str, str]:
        """``ErrorInfo.metadata``: the map received, else the details as they would be sent
        (the scalar ones, as strings). A new ``dict`` each time."""
        if self._error_info is None:
            return _info_metadata(self.details)
        return dict(self._error_info[2])

    # -- the standard's API ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The standard's JSON envelope: ``error``, ``message``, ``details`` and ``retry_after``."""
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
        return _code_of(self)

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
