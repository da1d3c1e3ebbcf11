"""asyncio client interceptors (``grpc.aio`` channels): retry -> budget -> breaker -> attempt.

The same attempt core as the sync interceptor (`octollm_grpc.client._attempts`), awaited;
the call objects live in `octollm_grpc.client._aio_calls`. A unary call is retried inside the
interceptor. Calls with a request stream return at once (``call.write()`` waits for that) and
retry, when the policy says requests are replayable, while the caller awaits the response.
Response streams are retried until their first message.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

from grpc import aio

from octollm_grpc.client import _aio_hedging
from octollm_grpc.client._aio_calls import (
    AsyncSleep,
    Attempts,
    FailedCall,
    ResponseStream,
    RetryingCall,
    StreamUnary,
    awaited,
)
from octollm_grpc.client._aio_shapes import per_shape
from octollm_grpc.client._attempts import capped_from_start, straight_entry
from octollm_grpc.client._half_close import watch
from octollm_grpc.client._local_errors import local_error, refused_metadata
from octollm_grpc.client._observe import AioObserver, aio_details, code_of
from octollm_grpc.client._replay import AsyncReplay
from octollm_grpc.client._resilience import MethodPlan, Resilience
from octollm_grpc.errors import CircuitOpenError, OctoLLMError
from octollm_grpc.observability._client_metrics import ClientMethodMetrics

__all__ = ["AioRetryLayer", "AsyncSleep", "ObservedUnaryUnary", "aio_interceptors"]


class AioRetryLayer:
    """The aio retry layer of one channel: its core and its sleep, for every call shape."""

    def __init__(self, core: Resilience, sleep: AsyncSleep = asyncio.sleep) -> None:
        self._core = core
        self._sleep = sleep

    def _attempts(self, plan: MethodPlan, continuation: Any, details: aio.ClientCallDetails,
                  request: Any, start: float | None = None, token: int = 0) -> Attempts:
        return Attempts(core=self._core, plan=plan, details=details, continuation=continuation,
                        request=request, retryable=True, sleep=self._sleep, started=start,
                        token=token)

    async def streaming(self, continuation: Any, details: aio.ClientCallDetails,
                         requests: Any, streaming_requests: bool,
                         wrap: type[StreamUnary | ResponseStream]) -> Any:
        """``wrap``'s call object for a streaming call, its first attempt started."""
        refused = refused_metadata(details.metadata)
        if refused is not None:  # grpc would refuse it (or, on some versions, hang): typed now
            return FailedCall(refused)
        plan = self._core.plan(details.method)
        if plan.hedging is not None and not streaming_requests:  # hedged to the first message
            return await _aio_hedging.hedged_stream(self._core, plan, plan.hedging, continuation,
                                                   details, requests, self._sleep)
        replay = watcher = None
        if streaming_requests:
            requests, watcher = watch(requests)
            if (plan.policy is not None and plan.policy.replayable_requests
                    and requests is not None):
                replay = AsyncReplay(requests)
        attempts = Attempts(core=self._core, plan=plan, details=details,
                            continuation=continuation, request=requests, replay=replay,
                            retryable=replay is not None or not streaming_requests,
                            sleep=self._sleep, watcher=watcher)
        try:
            first = attempts.first()
        except CircuitOpenError as error:
            return FailedCall(error)
        return wrap(attempts, await attempts.call(first))


    async def unary_unary(self, continuation: Any, client_call_details: Any,
                          request: Any) -> Any:
        """Retries a unary call whole; a final failure awaits as the typed error."""
        refused = refused_metadata(client_call_details.metadata)
        if refused is not None:
            return FailedCall(refused)
        plan = self._core.plan(client_call_details.method)
        if plan.hedging is not None:  # a hedged method: concurrent attempts, not retries
            return await _aio_hedging.hedged_unary(self._core, plan, plan.hedging, continuation,
                                                  client_call_details, request, self._sleep)
        attempts: Attempts | None = None  # made on the first failure only, unless capped
        start = 0.0
        if capped_from_start(plan):
            attempts = self._attempts(plan, continuation, client_call_details, request)
            try:
                first = attempts.first()
            except CircuitOpenError as error:
                return FailedCall(error)
            call = await attempts.call(first)
            token = attempts.token
        else:
            start = self._core.clock() if client_call_details.timeout is not None else 0.0
            try:
                token = plan.acquire()
            except CircuitOpenError as error:
                return FailedCall(error)
            try:
                call = await continuation(client_call_details, request)
            except BaseException:
                if plan.breaker is not None:
                    plan.breaker.release(token)
                raise
        try:
            await call
        except BaseException as error:  # noqa: BLE001 - unary_failed raises what is no status
            return await self.unary_failed(plan, continuation, client_call_details, request,
                                           call, token, start, attempts, error)
        plan.succeeded(token)
        return call

    async def unary_failed(self, plan: MethodPlan, continuation: Any,
                           details: aio.ClientCallDetails, request: Any, call: Any, token: int,
                           start: float, attempts: Attempts | None,
                           error: BaseException) -> Any:
        """The unary call whose attempt ``call`` (permit ``token``) failed with ``error``:
        the call object of its retries, or the failed call (awaiting it raises the typed
        error). ``attempts``: the call's retry state, when made (else ``start`` is when the
        call started). Anything but a status (the caller's cancellation, a bug) cancels the
        attempt, frees its permit without a verdict on the server, and is raised again."""
        if isinstance(error, aio.AioRpcError):
            if attempts is None:
                attempts = self._attempts(plan, continuation, details, request, start, token)
            retrying = RetryingCall(attempts, call)
            try:
                await retrying.settle(awaited, error)
            except OctoLLMError as typed:
                return FailedCall(typed, retrying.current)
            return retrying.current
        call.cancel()
        if plan.breaker is not None:
            plan.breaker.release(token)
        local = local_error(error)
        if local is not None:  # grpc refused to send it: typed, not a traceback
            return FailedCall(local)
        raise error


def aio_interceptors(core: Resilience, sleep: AsyncSleep = asyncio.sleep) -> list[Any]:
    """The four interceptors of one resilient aio channel, sharing ``core``
    (`per_shape`).

    A unary call is retried inside the interceptor. A client stream returns at once and
    retries (when replayable) while the caller awaits the response; response streams (and
    bidi streams, when replayable) are retried until their first message.
    """
    layer = AioRetryLayer(core, sleep)
    return per_shape(
        layer.unary_unary,
        functools.partial(layer.streaming, streaming_requests=False, wrap=ResponseStream),
        functools.partial(layer.streaming, streaming_requests=True, wrap=StreamUnary),
        functools.partial(layer.streaming, streaming_requests=True, wrap=ResponseStream))


#: A method's plan and call metrics, or ``None`` when its calls take the general path.
_Straight = tuple[MethodPlan, ClientMethodMetrics | None] | None


class ObservedUnaryUnary(aio.UnaryUnaryClientInterceptor):
    """A resilient aio channel's unary calls in one interceptor: the observer's work
    (`AioObserver`: propagation, trace context, call metrics) around the retry layer's
    (`AioRetryLayer`).

    The same work as the two stacked, minus the grpc interceptor layer and the per-shape
    adapters between them. A call of a method that is neither hedged nor capped per attempt
    takes a straight path: one lookup, the metadata read once, the metrics inline.
    """

    def __init__(self, core: Resilience, sleep: AsyncSleep = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic, *, alone: bool = False) -> None:
        """``alone``: no interceptor follows this one (``resilient_channel``'s unary calls),
        so a call's metadata goes on as pairs (see `aio_details`)."""
        self._alone = alone
        self._core = core
        self._clock = clock
        self._layer = AioRetryLayer(core, sleep)
        self._observer = AioObserver(core.metrics, clock)
        self._straight: dict[bytes, _Straight] = {}

    def _straight_entry(self, method: bytes) -> _Straight:
        entry = straight_entry(self._core, method)
        self._straight[method] = entry
        return entry

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                                    request: Any) -> Any:
        method = client_call_details.method
        try:
            entry = self._straight[method]
        except KeyError:
            entry = self._straight_entry(method)
        if entry is None:
            return await self._observer.unary_unary(continuation, client_call_details, request,
                                                    self._layer.unary_unary)
        plan, metrics = entry
        clock = self._clock
        began = 0.0
        if metrics is not None:
            metrics.start()
            began = clock()
        try:
            details, pairs = aio_details(client_call_details, self._alone)
            refused = refused_metadata(pairs)
            if refused is not None:  # grpc would refuse it (or, on some versions, hang)
                call: Any = FailedCall(refused)
            else:
                start = self._core.clock() if details.timeout is not None else 0.0
                try:
                    token = plan.acquire()
                except CircuitOpenError as error:
                    call = FailedCall(error)
                else:
                    try:
                        call = await continuation(details, request)
                    except BaseException:
                        if plan.breaker is not None:
                            plan.breaker.release(token)  # the attempt never started
                        raise
                    try:
                        await call
                    except BaseException as error:  # noqa: BLE001 - unary_failed raises it
                        call = await self._layer.unary_failed(
                            plan, continuation, details, request, call, token, start, None,
                            error)
                    else:  # the common case
                        plan.succeeded(token)
                        if metrics is not None:
                            metrics.handled_ok(clock() - began)
                        return call
        except BaseException as error:
            if metrics is not None:
                metrics.handled(code_of(error), clock() - began)
            raise
        if metrics is not None:
            try:
                code = await call.code()
            except BaseException as error:
                metrics.handled(code_of(error), clock() - began)
                raise
            metrics.handled(code, clock() - began)
        return call
