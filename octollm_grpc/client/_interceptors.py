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

from octollm_grpc.client._attempts import capped_from_start
from octollm_grpc.client._call_types import StreamContinuation, UnaryContinuation
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

__all__ = ["ResilientInterceptor"]


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
        attempts: Attempts | None = None
        if capped_from_start(plan):
            attempts = self._attempts(plan, continuation, details, request, replay, retryable)
            outcome = attempts.call(attempts.first())
            token = attempts.token
        else:
            # The common case stays lean: no retry state until the first failure.
            start = core.clock() if details.timeout is not None else 0.0
            token = plan.acquire()
            try:
                outcome = continuation(details, replay.fresh() if replay is not None else request)
            except BaseException:
                if plan.breaker is not None:
                    plan.breaker.release(token)  # the attempt never started: free its permit
                raise
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
