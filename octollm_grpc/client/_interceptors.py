"""Sync client interceptor (``grpc.intercept_channel``): retry -> budget -> breaker -> attempt.

Every attempt is decided by the shared core (`octollm_grpc.client._attempts`, on
`octollm_grpc.client._resilience`); this module and `octollm_grpc.client._sync_calls` only
call and wait. The final failure raises the typed error (``from_rpc_error``), which is also a
``grpc.RpcError``. Unary responses
are retried whole (``.future()`` retries in the background); response streams only until
their first message; client and bidi streams only when the policy says requests are
replayable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from octollm_grpc.client._attempts import capped_from_start, straight_entry
from octollm_grpc.client._call_types import StreamContinuation, UnaryContinuation
from octollm_grpc.client._observe import CallObserver, Ending, code_of, end_with, sync_details
from octollm_grpc.client._replay import Replay
from octollm_grpc.client._resilience import MethodPlan, Resilience
from octollm_grpc.client._sync_calls import (
    Attempts,
    FailedStream,
    ResponseStream,
    UnaryFuture,
)
from octollm_grpc.client._sync_hedging import hedged_stream, hedged_unary
from octollm_grpc.errors import CircuitOpenError
from octollm_grpc.observability._client_metrics import ClientMethodMetrics

__all__ = ["ObservedResilientInterceptor", "ResilientInterceptor"]


def _raised_by_blocking_call(error: BaseException) -> bool:
    """Whether a failed first attempt came from a blocking call (``__call__``/``with_call``).

    grpc's interceptor API gives every path the same continuation and a Call-Future, and does
    not say which one the caller used. A blocking continuation gets its error by catching
    what the blocking call raised, so the error carries a traceback; ``.future()`` hands over
    the failed future itself, never raised, even when it has already finished. Should this
    ever guess wrong, a blocking call still gets the right outcome (it waits on the future
    its retries resolve); only a ``.future()`` whose error someone raised before us would
    wait for its retries in the caller's thread.
    """
    return error.__traceback__ is not None


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

    def intercept_unary_unary(self, continuation: UnaryContinuation,
                              client_call_details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        plan = self._core.plan(client_call_details.method)
        if plan.hedging is not None:  # a hedged method: concurrent attempts, not retries
            return hedged_unary(self._core, plan, plan.hedging, continuation,
                                client_call_details, request, self._sleep)
        return self._unary(continuation, client_call_details, request, None, False)

    def intercept_stream_unary(self, continuation: UnaryContinuation,
                               client_call_details: grpc.ClientCallDetails,
                               request_iterator: Iterator[Any]) -> Any:
        plan = self._core.plan(client_call_details.method)
        replay = (Replay(request_iterator)
                  if plan.policy is not None and plan.policy.replayable_requests else None)
        return self._unary(continuation, client_call_details, request_iterator, replay, True)

    def _attempts(self, plan: MethodPlan, continuation: UnaryContinuation | StreamContinuation,
                  details: grpc.ClientCallDetails, request: Any,
                  replay: Replay | None, retryable: bool, start: float | None = None,
                  token: int = 0) -> Attempts:
        return Attempts(core=self._core, plan=plan, details=details, continuation=continuation,
                        request=request, replay=replay, retryable=retryable, sleep=self._sleep,
                        started=start, token=token)

    def _unary(self, continuation: UnaryContinuation, details: grpc.ClientCallDetails,
               request: Any, replay: Replay | None, streaming: bool) -> Any:
        core = self._core
        plan = core.plan(details.method)
        retryable = not streaming or replay is not None
        if capped_from_start(plan):
            attempts = self._attempts(plan, continuation, details, request, replay, retryable)
            outcome = attempts.call(attempts.first())
            return self._settle(plan, continuation, details, request, replay, retryable,
                                outcome, attempts.token, attempts=attempts)
        # The common case stays lean: no retry state until the first failure.
        start = core.clock() if details.timeout is not None else 0.0
        token = plan.acquire()
        try:
            outcome = continuation(details, replay.fresh() if replay is not None else request)
        except BaseException:
            if plan.breaker is not None:
                plan.breaker.release(token)  # the attempt never started: free its permit
            raise
        return self._settle(plan, continuation, details, request, replay, retryable, outcome,
                            token, start)

    def _settle(self, plan: MethodPlan, continuation: UnaryContinuation,
                details: grpc.ClientCallDetails, request: Any, replay: Replay | None,
                retryable: bool, outcome: Any, token: int, start: float | None = None,
                attempts: Attempts | None = None) -> Any:
        """The call whose first attempt is ``outcome`` (permit ``token``, started at ``start``
        when ``attempts`` is not made yet): the outcome when it succeeded, else its retries."""
        if outcome.done():
            error = outcome.exception()
            if error is None:  # the common case: no allocation beyond grpc's own
                plan.succeeded(token)
                return outcome
        else:
            error = None
        if attempts is None:
            attempts = self._attempts(plan, continuation, details, request, replay, retryable,
                                      start, token)
        if error is None or not _raised_by_blocking_call(error):
            return UnaryFuture(attempts, outcome)  # .future(): retries go on in the background
        while isinstance(error, grpc.RpcError):
            outcome = attempts.after_failure(error)
            error = outcome.exception()
            if error is None:
                attempts.succeeded()
                return outcome
        attempts.release()
        return outcome  # not a status (e.g. a serializer bug): grpc raises it as is

    # -- streamed responses -------------------------------------------------------------------

    def intercept_unary_stream(self, continuation: StreamContinuation,
                               client_call_details: grpc.ClientCallDetails,
                               request: Any) -> Any:
        plan = self._core.plan(client_call_details.method)
        if plan.hedging is not None:  # hedged until the first message
            return hedged_stream(self._core, plan, plan.hedging, continuation,
                                 client_call_details, request, self._sleep)
        return self._stream(continuation, client_call_details, request, None, True)

    def intercept_stream_stream(self, continuation: StreamContinuation,
                                client_call_details: grpc.ClientCallDetails,
                                request_iterator: Iterator[Any]) -> Any:
        plan = self._core.plan(client_call_details.method)
        if plan.policy is not None and plan.policy.replayable_requests:
            return self._stream(continuation, client_call_details, request_iterator,
                                Replay(request_iterator), True)
        return self._stream(continuation, client_call_details, request_iterator, None, False)

    def _stream(self, continuation: StreamContinuation, details: grpc.ClientCallDetails,
                request: Any, replay: Replay | None,
                retryable: bool) -> ResponseStream | FailedStream:
        attempts = self._attempts(self._core.plan(details.method), continuation, details,
                                  request, replay, retryable)
        try:
            first = attempts.first()
        except CircuitOpenError as error:
            return FailedStream(error)
        return ResponseStream(attempts, attempts.call(first))


class ObservedResilientInterceptor(ResilientInterceptor):
    """A resilient sync channel's whole stack as one interceptor: `CallObserver` (propagation,
    trace context, call metrics) around `ResilientInterceptor` (retries, budget, breaker).

    The same work as the two stacked on a channel, minus the grpc interceptor layer between
    them (its call details, continuation and outcome cost about 20k instructions per call).
    A unary call of a method that is neither hedged nor capped per attempt takes a straight
    path: one lookup, and the observer's bookkeeping inline.
    """

    def __init__(self, core: Resilience, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(core, sleep)
        self._observer = CallObserver(core.metrics, clock)
        self._clock = clock
        # Per method: its plan and call metrics, or None when its calls take the general path.
        self._straight: dict[str, tuple[MethodPlan, ClientMethodMetrics | None] | None] = {}

    def _straight_entry(self, method: str) -> tuple[MethodPlan, ClientMethodMetrics | None] | None:
        entry = straight_entry(self._core, method)
        self._straight[method] = entry
        return entry

    def intercept_unary_unary(self, continuation: UnaryContinuation,
                              client_call_details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        method = client_call_details.method
        try:
            entry = self._straight[method]
        except KeyError:
            entry = self._straight_entry(method)
        if entry is None:
            return self._observer._unary(continuation, client_call_details, request, "unary",
                                         super().intercept_unary_unary)
        plan, metrics = entry
        clock = self._clock
        began = 0.0
        if metrics is not None:
            metrics.start()
            began = clock()
        details = sync_details(client_call_details)
        try:
            start = self._core.clock() if details.timeout is not None else 0.0
            token = plan.acquire()
            try:
                outcome = continuation(details, request)
            except BaseException:
                if plan.breaker is not None:
                    plan.breaker.release(token)  # the attempt never started: free its permit
                raise
            if outcome.done() and outcome.exception() is None:  # the common case
                plan.succeeded(token)
                if metrics is not None:
                    metrics.handled_ok(clock() - began)
                return outcome
            outcome = self._settle(plan, continuation, details, request, None, True, outcome,
                                   token, start)
        except Exception as error:  # the typed error: the call is over
            if metrics is not None:
                metrics.handled(code_of(error), clock() - began)
            raise
        if metrics is not None:
            end_with(outcome, Ending(metrics, clock, began))
        return outcome

    def intercept_stream_unary(self, continuation: UnaryContinuation,
                               client_call_details: grpc.ClientCallDetails,
                               request_iterator: Iterator[Any]) -> Any:
        return self._observer._unary(continuation, client_call_details, request_iterator,
                                     "client_stream", super().intercept_stream_unary)

    def intercept_unary_stream(self, continuation: StreamContinuation,
                               client_call_details: grpc.ClientCallDetails,
                               request: Any) -> Any:
        return self._observer._stream(continuation, client_call_details, request,
                                      "server_stream", super().intercept_unary_stream)

    def intercept_stream_stream(self, continuation: StreamContinuation,
                                client_call_details: grpc.ClientCallDetails,
                                request_iterator: Iterator[Any]) -> Any:
        return self._observer._stream(continuation, client_call_details, request_iterator,
                                      "bidi_stream", super().intercept_stream_stream)
