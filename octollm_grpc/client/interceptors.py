"""Sync client interceptor (``grpc.intercept_channel``): retry -> budget -> breaker -> attempt.

All decisions come from :mod:`octollm_grpc.client.retry`; this module only starts attempts,
sleeps, and turns the final failure into the typed error (``from_rpc_error``), which is also
a ``grpc.RpcError``. Unary responses are retried whole; response streams only until their
first message; client and bidi streams only when the policy says requests are replayable.
``.future()`` on a unary call runs its retries before returning the future.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from octollm_grpc.client.replay import Replay
from octollm_grpc.client.retry import ATTEMPTS_HEADER, CallRetry, MethodPlan, Resilience
from octollm_grpc.errors import CircuitOpenError, OctoLLMError
from octollm_grpc.status import from_rpc_error

__all__ = ["ResilientInterceptor"]

_CANCELLED = grpc.StatusCode.CANCELLED


class _CallDetails(grpc.ClientCallDetails):
    """The details of one attempt: the caller's, with its timeout and attempt header."""

    __slots__ = ("compression", "credentials", "metadata", "method", "timeout", "wait_for_ready")

    def __init__(self, base: grpc.ClientCallDetails, timeout: float | None, previous: int) -> None:
        self.method = base.method
        self.timeout = timeout
        metadata = tuple(base.metadata or ())
        if previous:
            metadata += ((ATTEMPTS_HEADER, str(previous)),)
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _LocalStatus:
    """A status that never crossed the wire (e.g. the caller cancelled during a backoff)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self._code, self._message = code, message

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message


class ResilientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """One interceptor for all four call shapes. ``sleep`` waits between attempts."""

    def __init__(self, core: Resilience, sleep: Callable[[float], None] = time.sleep) -> None:
        self._core = core
        self._sleep = sleep

    # -- unary responses --------------------------------------------------------------------

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                              request: Any) -> Any:
        return self._unary(continuation, client_call_details, request, None)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                               request_iterator: Any) -> Any:
        plan = self._core.plan(client_call_details.method)
        replay = (Replay(request_iterator)
                  if plan.policy is not None and plan.policy.replayable_requests else None)
        return self._unary(continuation, client_call_details, request_iterator, replay,
                           streaming=True)

    def _unary(self, continuation: Any, details: Any, request: Any, replay: Replay | None,
               streaming: bool = False) -> Any:
        core = self._core
        plan = core.plan(details.method)
        start = core.clock() if details.timeout is not None else 0.0
        retry: CallRetry | None = None
        attempt_details = details
        if plan.policy is not None and plan.policy.per_attempt_timeout is not None:
            retry = CallRetry(core, plan, details.timeout, start)
            attempt_details = _CallDetails(details, retry.attempt_timeout(), 0)
        token = plan.acquire()
        outcome = continuation(attempt_details, replay.fresh() if replay else request)
        while True:
            try:
                error = outcome.exception()
            except grpc.FutureCancelledError:
                if plan.breaker is not None:
                    plan.breaker.release(token)
                return outcome
            if error is None:
                plan.succeeded(token)
                return outcome
            if not isinstance(error, grpc.RpcError):
                if plan.breaker is not None:
                    plan.breaker.release(token)
                return outcome  # not a status (e.g. a serializer bug): grpc raises it as is
            code = error.code()
            if plan.breaker is not None:
                plan.breaker.record(token, code)
            if streaming and replay is None:
                raise from_rpc_error(error) from error
            if retry is None:
                retry = CallRetry(core, plan, details.timeout, start)
            delay = retry.next_delay(code, error.trailing_metadata())  # type: ignore[arg-type]
            if delay is None:
                raise from_rpc_error(error) from error
            self._sleep(delay)
            timeout = retry.attempt_timeout()
            if timeout is not None and timeout <= 0:
                raise from_rpc_error(error) from error
            token = plan.acquire()
            outcome = continuation(_CallDetails(details, timeout, retry.attempts - 1),
                                   replay.fresh() if replay else request)

    # -- streamed responses -------------------------------------------------------------------

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any,
                               request: Any) -> Any:
        return self._stream(continuation, client_call_details, request, None, retryable=True)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                request_iterator: Any) -> Any:
        plan = self._core.plan(client_call_details.method)
        if plan.policy is not None and plan.policy.replayable_requests:
            return self._stream(continuation, client_call_details, request_iterator,
                                Replay(request_iterator), retryable=True)
        return self._stream(continuation, client_call_details, request_iterator, None,
                            retryable=False)

    def _stream(self, continuation: Any, details: Any, request: Any, replay: Replay | None,
                retryable: bool) -> _ResponseStream | _FailedStream:
        core = self._core
        plan = core.plan(details.method)
        start = core.clock() if details.timeout is not None else 0.0
        retry: CallRetry | None = None
        attempt_details = details
        if retryable and plan.policy is not None and plan.policy.per_attempt_timeout is not None:
            retry = CallRetry(core, plan, details.timeout, start)
            attempt_details = _CallDetails(details, retry.attempt_timeout(), 0)
        try:
            token = plan.acquire()
        except CircuitOpenError as error:
            return _FailedStream(error)
        call = continuation(attempt_details, replay.fresh() if replay else request)
        return _ResponseStream(self, plan, continuation, details, request, replay, call, token,
                               start, retry, retryable)


class _ResponseStream(grpc.Call, Iterator[Any]):
    """A response stream that retries its call until the first message arrives.

    After the first message (or a clean end) the breaker and budget have their verdict and
    later failures are raised, typed, without a retry. ``cancel()`` is never retried.
    """

    def __init__(self, owner: ResilientInterceptor, plan: MethodPlan, continuation: Any,
                 details: Any, request: Any, replay: Replay | None, call: Any, token: int,
                 start: float, retry: CallRetry | None, retryable: bool) -> None:
        self._owner = owner
        self._plan = plan
        self._continuation = continuation
        self._details = details
        self._request = request
        self._replay = replay
        self._call = call
        self._token = token
        self._start = start
        self._retry = retry
        self._retryable = retryable
        self._settled = False
        self._cancelled = False

    def __iter__(self) -> _ResponseStream:
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
                self._next_attempt(error)
                continue
            self._settle_ok()
            return message

    def _settle_ok(self) -> None:
        self._settled = True
        self._plan.succeeded(self._token)

    def _next_attempt(self, error: grpc.RpcError) -> None:
        """Start the retry of a failed attempt, or raise the typed error."""
        plan = self._plan
        code = error.code()
        if plan.breaker is not None:
            plan.breaker.record(self._token, code)
        if self._cancelled or not self._retryable:
            self._settled = True
            raise from_rpc_error(error) from error
        if self._retry is None:
            self._retry = CallRetry(self._owner._core, plan, self._details.timeout, self._start)
        retry = self._retry
        delay = retry.next_delay(code, error.trailing_metadata())  # type: ignore[arg-type]
        if delay is None:
            self._settled = True
            raise from_rpc_error(error) from error
        self._owner._sleep(delay)
        if self._cancelled:
            self._settled = True
            raise from_rpc_error(_LocalStatus(_CANCELLED, "Locally cancelled by caller"))
        timeout = retry.attempt_timeout()
        if timeout is not None and timeout <= 0:
            self._settled = True
            raise from_rpc_error(error) from error
        self._token = plan.acquire()
        request = self._replay.fresh() if self._replay else self._request
        self._call = self._continuation(
            _CallDetails(self._details, timeout, retry.attempts - 1), request)

    # -- grpc.Call, answered by the current attempt ------------------------------------------

    def cancel(self) -> bool:
        self._cancelled = True
        if not self._settled and self._plan.breaker is not None:
            self._plan.breaker.release(self._token)  # a cancelled probe frees its permit now
        return bool(self._call.cancel())

    def is_active(self) -> bool:
        return bool(self._call.is_active())

    def time_remaining(self) -> float:
        return self._call.time_remaining()  # type: ignore[no-any-return]

    def add_callback(self, callback: Any) -> bool:
        return bool(self._call.add_callback(callback))

    def initial_metadata(self) -> Any:
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._call.code()  # type: ignore[no-any-return]

    def details(self) -> str:
        return self._call.details()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<_ResponseStream of {self._call!r}>"


class _FailedStream(grpc.Call, Iterator[Any]):
    """A response stream that never started (its breaker is open): iterating raises."""

    def __init__(self, error: OctoLLMError) -> None:
        self._error = error

    def __iter__(self) -> _FailedStream:
        return self

    def __next__(self) -> Any:
        raise self._error

    def cancel(self) -> bool:
        return False

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def add_callback(self, callback: Any) -> bool:
        return False

    def initial_metadata(self) -> Any:
        return None

    def trailing_metadata(self) -> Any:
        return None

    def code(self) -> grpc.StatusCode:
        return self._error.code()

    def details(self) -> str:
        return self._error.details()
