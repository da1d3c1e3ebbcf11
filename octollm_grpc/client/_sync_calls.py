"""The call objects of the sync interceptor: attempt loop state, response streams, futures.

`Attempts` is the shared attempt core (`octollm_grpc.client._attempts`) with the
sync way to call and to wait; the call objects below only decide *when* to ask it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from octollm_grpc.client._attempts import CallAttempts, WithTimeout
from octollm_grpc.client._call_types import CallFuture, CallStream
from octollm_grpc.client._delegation import DelegatingCall
from octollm_grpc.client._resilience import ATTEMPTS_HEADER
from octollm_grpc.client._scheduler import shared_scheduler
from octollm_grpc.errors import CircuitOpenError, OctoLLMError
from octollm_grpc.status import from_rpc_error

__all__ = ["Attempts", "CallDetails", "FailedStream", "ResponseStream", "UnaryFuture"]

_CANCELLED = grpc.StatusCode.CANCELLED


class CallDetails(grpc.ClientCallDetails):
    """The details of one attempt: the caller's, with its timeout and attempt header."""

    __slots__ = ("compression", "credentials", "metadata", "method", "timeout", "wait_for_ready")

    def __init__(self, base: grpc.ClientCallDetails, timeout: float | None, previous: int) -> None:
        self.method = base.method
        self.timeout = timeout
        metadata = tuple(base.metadata or ())
        if previous:
            # Ours replaces any the caller sent: the server must see one, correct count.
            metadata = (*(m for m in metadata if m[0] != ATTEMPTS_HEADER),
                        (ATTEMPTS_HEADER, str(previous)))
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _LocalStatus:
    """A status that never crossed the wire (the caller cancelled during a backoff)."""

    def code(self) -> grpc.StatusCode:
        return _CANCELLED

    def details(self) -> str:
        return "Locally cancelled by caller"


@dataclass(eq=False, kw_only=True, slots=True)
class Attempts(CallAttempts[grpc.ClientCallDetails, Callable[[float], None]]):
    """One sync call's attempts (`CallAttempts`): calls block, waits sleep."""

    with_timeout: WithTimeout = CallDetails

    def call(self, details: grpc.ClientCallDetails) -> Any:
        """Start an attempt with ``details`` (its permit taken); free the permit if it cannot."""
        try:
            return self.continuation(details, self.requests())
        except BaseException:
            self.release()  # the attempt never started
            raise

    def after_failure(self, error: grpc.RpcError) -> Any:
        """Record a failed attempt, wait, and return the next one; or raise the typed error."""
        self.sleep(self.delay(error))
        return self.call(self.next(error))


class ResponseStream(DelegatingCall, Iterator[Any]):
    """A response stream that retries its call until the first message arrives.

    After the first message (or a clean end) the breaker and budget have their verdict and
    later failures are raised, typed, without a retry. ``cancel()`` is never retried.
    """

    def __init__(self, attempts: Attempts, call: CallStream) -> None:
        self._attempts = attempts
        self._call = call
        self._settled = False
        self._cancelled = False

    def __iter__(self) -> ResponseStream:
        return self

    def __next__(self) -> Any:
        if self._settled:
            try:
                return next(self._call)
            except grpc.RpcError as error:
                raise from_rpc_error(error) from error
        while True:
            try:
                message = next(self._call)
            except StopIteration:
                self._settle_ok()
                raise
            except grpc.RpcError as error:
                self._call = self._retry(error)
                continue
            self._settle_ok()
            return message

    def _settle_ok(self) -> None:
        self._settled = True
        self._attempts.succeeded()

    def _retry(self, error: grpc.RpcError) -> Any:
        attempts = self._attempts
        try:
            attempts.sleep(attempts.delay(error, self._cancelled))
            if self._cancelled:
                raise from_rpc_error(_LocalStatus())
            return attempts.call(attempts.next(error))
        except OctoLLMError:
            self._settled = True
            raise

    # -- grpc.Call, answered by the current attempt (DelegatingCall) -------------------------

    def cancel(self) -> bool:
        self._cancelled = True
        if not self._settled:
            self._attempts.release()  # a cancelled probe frees its permit now
        return super().cancel()


class FailedStream(grpc.Call, Iterator[Any]):
    """A response stream that never started (its breaker is open): iterating raises."""

    def __init__(self, error: OctoLLMError) -> None:
        self._error = error

    def __iter__(self) -> FailedStream:
        return self

    def __next__(self) -> Any:
        raise self._error

    def cancel(self) -> bool:
        return False

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    def initial_metadata(self) -> Any:
        return None

    def trailing_metadata(self) -> Any:
        return None

    def code(self) -> grpc.StatusCode:
        return self._error.code()

    def details(self) -> str:
        return self._error.details()


class UnaryFuture(grpc.Call, grpc.Future):  # type: ignore[type-arg]
    """What ``.future()`` returns: retries run on callbacks and the shared retry scheduler.

    Resolves to the response, the typed error, or cancellation; ``code()`` and the metadata
    methods wait for the outcome and answer for the last attempt.
    """

    def __init__(self, attempts: Attempts, first: CallFuture) -> None:
        self._attempts = attempts
        self._condition = threading.Condition()
        self._current = first
        self._finished = False
        self._cancelled = False  # set first by cancel(): stops the chain of attempts
        self._outcome_cancelled = False
        self._response: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[grpc.Future[Any]], None]] = []
        first.add_done_callback(self._attempt_done)

    # -- driving the attempts ---------------------------------------------------------------

    def _attempt_done(self, future: CallFuture) -> None:
        attempts = self._attempts
        if self._cancelled:
            return
        try:
            error = future.exception()
        except grpc.FutureCancelledError:
            attempts.release()
            self._finish(cancelled=True)
            return
        if error is None:
            attempts.succeeded()
            self._finish(response=future.result())
            return
        if not isinstance(error, grpc.RpcError):
            attempts.release()
            self._finish(error=error)
            return
        try:
            delay = attempts.delay(error)
        except OctoLLMError as typed:
            self._finish(error=typed)
            return
        # One scheduler thread waits out every future's backoff (no thread per retry).
        shared_scheduler().call_later(delay, lambda: self._next_attempt(error),
                                      self._attempts.sleep)

    def _next_attempt(self, error: grpc.RpcError) -> None:
        if self._cancelled:
            return
        try:
            call = self._attempts.call(self._attempts.next(error))
        except OctoLLMError as typed:
            self._finish(error=typed)
            return
        with self._condition:
            self._current = call
            cancelled = self._cancelled
        if cancelled:
            call.cancel()
        call.add_done_callback(self._attempt_done)

    def _finish(self, *, response: Any = None, error: BaseException | None = None,
                cancelled: bool = False) -> bool:
        with self._condition:
            if self._finished:
                return False
            self._finished = True
            self._outcome_cancelled = cancelled
            self._response, self._error = response, error
            callbacks, self._callbacks = self._callbacks, []
            self._condition.notify_all()
        for callback in callbacks:
            callback(self)
        return True

    def _wait(self, timeout: float | None) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: self._finished, timeout):
                raise grpc.FutureTimeoutError()
        if self._outcome_cancelled:
            raise grpc.FutureCancelledError()

    # -- grpc.Future ----------------------------------------------------------------------------

    def cancel(self) -> bool:
        with self._condition:
            if self._finished or self._cancelled:
                return False
            self._cancelled = True
            current = self._current
        self._attempts.release()
        current.cancel()
        return self._finish(cancelled=True)

    def cancelled(self) -> bool:
        return self._outcome_cancelled

    def running(self) -> bool:
        return not self._finished

    def done(self) -> bool:
        return self._finished

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._response

    def exception(self, timeout: float | None = None) -> BaseException | None:  # type: ignore[override]
        self._wait(timeout)
        return self._error

    def traceback(self, timeout: float | None = None) -> TracebackType | None:
        self._wait(timeout)
        return self._error.__traceback__ if self._error is not None else None

    def add_done_callback(self, fn: Callable[[grpc.Future[Any]], None]) -> None:
        with self._condition:
            if not self._finished:
                self._callbacks.append(fn)
                return
        fn(self)

    # -- grpc.Call -------------------------------------------------------------------------------

    def _outcome_call(self) -> CallFuture | CircuitOpenError:
        with self._condition:
            self._condition.wait_for(lambda: self._finished)
        if isinstance(self._error, CircuitOpenError):
            return self._error  # the last attempt never left the process
        return self._current

    def initial_metadata(self) -> Any:
        return self._outcome_call().initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._outcome_call().trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._outcome_call().code()

    def details(self) -> str:
        return self._outcome_call().details()

    def is_active(self) -> bool:
        return not self._finished

    def time_remaining(self) -> float | None:  # type: ignore[override]
        # grpc documents None (no deadline); its type stubs say float.
        return self._current.time_remaining()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.add_done_callback(lambda _future: callback())
        return True
