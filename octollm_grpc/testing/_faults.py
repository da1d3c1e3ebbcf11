"""The fault script both stacks share: what to do to the next calls, and what was done.

`FaultScript` is a thread-safe queue of planned faults plus a log of every call it saw
(`Injection`). The interceptor (`octollm_grpc.testing._injector`) only asks it,
once per call, what to do, and carries that out on its stack.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc.errors import OctoLLMError
from octollm_grpc.server import current_request_id
from octollm_grpc.status import to_status
from octollm_grpc.status._limits import DETAILS_KEY, PUSHBACK_KEY

__all__ = [
    "Action",
    "Fault",
    "FaultError",
    "FaultScript",
    "Injection",
    "status_for",
    "time_remaining",
]

Action = Literal["fail", "delay", "pushback", "pass"]
#: What a failure is made of: a typed error (sent as our rich status) or a bare status code.
FaultError = OctoLLMError | grpc.StatusCode

# grpcio reports a call without a deadline as ~2**63 ns from now on sync (None on aio).
_NO_DEADLINE = 1e9


@dataclass(frozen=True)
class Injection:
    """One call the injector saw, and what it did to it.

    ``time_remaining`` is the seconds left of the deadline the call carried when it arrived
    (``None``: no deadline). ``code`` is the status sent for ``fail``/``pushback``;
    ``seconds`` is the delay, or the pushback advertised.
    """

    method: str
    action: Action
    time_remaining: float | None
    code: grpc.StatusCode | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Fault:
    """What to do to one call: ``delay`` by ``seconds``, or end it (``fail``/``pushback``)."""

    action: Action
    error: FaultError | None = None
    seconds: float | None = None


@dataclass
class _Planned:
    fault: Fault
    remaining: int
    method: str | None


def _normalize_method(method: str | None) -> str | None:
    if method is None:
        return None
    if not method or method.count("/") != 1 + method.startswith("/"):
        raise ValueError(f"method must be a full name like '/pkg.Service/Method', not {method!r}")
    return method if method.startswith("/") else "/" + method


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, not {n!r}")
    return n


def _check_error(error: object) -> FaultError:
    if isinstance(error, OctoLLMError):
        return error
    if isinstance(error, grpc.StatusCode) and error is not grpc.StatusCode.OK:
        return error
    raise TypeError(f"error must be an OctoLLMError or a non-OK grpc.StatusCode, not {error!r}")


def _code_of(error: FaultError) -> grpc.StatusCode:
    return error if isinstance(error, grpc.StatusCode) else error.code()


def time_remaining(context: Any) -> float | None:
    """The seconds left of the call's deadline, ``None`` when it has none (both stacks)."""
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE:
        return None
    return float(remaining)


class FaultScript:
    """Planned faults, consumed in order by the calls they match; every call is recorded.

    A call takes the first planned fault whose method filter matches it (no filter matches
    every method); a call that matches none passes untouched (recorded as ``pass``). All
    methods are thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._planned: list[_Planned] = []
        self._records: list[Injection] = []

    # -- planning ---------------------------------------------------------------------------

    def fail_next(self, n: int, error: FaultError, *, method: str | None = None) -> None:
        """End the next ``n`` matching calls with ``error``, before the handler runs.

        An `OctoLLMError` is sent as our rich status (exactly
        what the server stack sends when a handler raises it, request id included); a
        ``grpc.StatusCode`` is sent bare, with a short message and no details.
        """
        self._plan(Fault("fail", _check_error(error)), n, method)

    def delay_next(self, n: int, seconds: float, *, method: str | None = None) -> None:
        """Sleep ``seconds`` (with the injector's sleep) before each of the next ``n`` calls.

        A call whose deadline leaves less than ``seconds`` ends with ``DEADLINE_EXCEEDED``
        when its deadline is spent, and its handler does not run.

        Args:
            n: How many matching calls to delay.
            seconds: The delay (finite, >= 0).
            method: Only calls of this full method name (default: any).

        Raises:
            ValueError: ``seconds`` is negative, infinite or NaN.
        """
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be finite and >= 0, not {seconds!r}")
        self._plan(Fault("delay", seconds=float(seconds)), n, method)

    def pushback_next(
        self,
        n: int,
        seconds: float,
        *,
        error: FaultError = grpc.StatusCode.UNAVAILABLE,
        method: str | None = None,
    ) -> None:
        """Fail the next ``n`` matching calls with ``error``, asking the client to wait.

        The status carries ``grpc-retry-pushback-ms`` and a ``RetryInfo`` detail of
        ``seconds`` (for an ``OctoLLMError``, its ``retry_after`` too). A negative
        ``seconds`` sends the gRFC A6 "do not retry" pushback (``-1``) and no ``RetryInfo``.
        """
        if not math.isfinite(seconds):
            raise ValueError(f"seconds must be finite, not {seconds!r}")
        self._plan(Fault("pushback", _check_error(error), float(seconds)), n, method)

    def clear(self) -> None:
        """Drop every planned fault and every record."""
        with self._lock:
            self._planned.clear()
            self._records.clear()

    def _plan(self, fault: Fault, n: int, method: str | None) -> None:
        planned = _Planned(fault, _count(n), _normalize_method(method))
        with self._lock:
            self._planned.append(planned)

    # -- what happened ----------------------------------------------------------------------

    @property
    def records(self) -> list[Injection]:
        """Every call seen so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._records)

    @property
    def pending(self) -> int:
        """How many planned faults are still to be used."""
        with self._lock:
            return sum(p.remaining for p in self._planned)

    def count(self, method: str | None = None, action: Action | None = None) -> int:
        """How many calls were seen (for ``method`` only, with ``action`` only, when given)."""
        name = _normalize_method(method)
        with self._lock:
            return sum(1 for r in self._records
                       if (name is None or r.method == name)
                       and (action is None or r.action == action))

    # -- per call (the interceptor's side) --------------------------------------------------

    def take(self, method: str, remaining: float | None) -> Fault | None:
        """The fault for a call to ``method`` arriving now, recorded; ``None``: let it pass."""
        with self._lock:
            for index, planned in enumerate(self._planned):
                if planned.method is None or planned.method == method:
                    planned.remaining -= 1
                    if planned.remaining == 0:
                        del self._planned[index]
                    fault = planned.fault
                    code = _code_of(fault.error) if fault.error is not None else None
                    self._records.append(
                        Injection(method, fault.action, remaining, code, fault.seconds))
                    return fault
            self._records.append(Injection(method, "pass", remaining))
            return None


class InjectedStatus(NamedTuple):
    """The ``grpc.Status`` an injected failure ends the call with (``abort_with_status``)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, Any], ...]


grpc.Status.register(InjectedStatus)


def _merge(current: Iterable[Any] | None, ours: tuple[tuple[str, Any], ...]) -> tuple[Any, ...]:
    # The call's trailers first, but ours win: one rich status, one pushback, one request id.
    keys = {key for key, _ in ours} | ({DETAILS_KEY} if ours else set())
    return (*((k, v) for k, v in (current or ()) if k not in keys), *ours)


def status_for(fault: Fault, current_trailers: Iterable[Any] | None) -> InjectedStatus:
    """The status a ``fail``/``pushback`` fault ends the call with.

    Trailers the call already has (the stack's request id, the handler's own) are kept:
    aborting with a status would otherwise replace them.
    """
    assert fault.error is not None
    error, pushback = fault.error, fault.seconds if fault.action == "pushback" else None
    if isinstance(error, OctoLLMError):
        if pushback is not None:
            error = copy.copy(error)  # the planned error serves n calls: never change it
            error.retry_after = pushback if pushback > 0 else None
        status = to_status(error, request_id=current_request_id())
        code, message, trailers = status.code, status.details, tuple(status.trailing_metadata)
    else:
        code, message = error, f"{error.name} (injected by FaultInjector)"
        trailers = _bare_trailers(code, message, pushback)
    if pushback is not None and pushback <= 0:
        # to_status advertises only positive delays: 0 is "retry now", negative "never" (A6).
        pushback_ms = "0" if pushback == 0 else "-1"
        trailers = (*(t for t in trailers if t[0] != PUSHBACK_KEY), (PUSHBACK_KEY, pushback_ms))
    return InjectedStatus(code, message, _merge(current_trailers, tuple(trailers)))


def _bare_trailers(
    code: grpc.StatusCode, message: str, pushback: float | None
) -> tuple[tuple[str, str | bytes], ...]:
    if pushback is None or pushback <= 0:
        return ()
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round(pushback * 1e9))
    retry_info = error_details_pb2.RetryInfo(retry_delay=delay)
    proto = status_pb2.Status(code=code.value[0], message=message)
    proto.details.add().Pack(retry_info)
    return ((DETAILS_KEY, proto.SerializeToString()),
            (PUSHBACK_KEY, str(math.ceil(pushback * 1000))))
