"""``FaultInjector``: one server interceptor for ``grpc.server`` and ``grpc.aio.server``.

The same object serves both stacks, so a test plans faults once whichever server it runs:
grpcio's sync server hands ``intercept_service`` a continuation that returns the handler,
grpc.aio's one that returns an awaitable, and the injector answers in kind. What to do is
decided by the shared `FaultScript`; this module only
carries it out (sleep or abort) before the handler runs.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from octollm_grpc.testing._faults import FaultScript, status_for, time_remaining

__all__ = ["FaultInjector"]


def _handler_shape(
    handler: grpc.RpcMethodHandler[Any, Any],
) -> tuple[Callable[..., grpc.RpcMethodHandler[Any, Any]], Any]:
    # grpc dispatches on the streaming flags: the method-handler factory and the behaviour.
    if not handler.request_streaming:
        if not handler.response_streaming:
            return grpc.unary_unary_rpc_method_handler, handler.unary_unary
        return grpc.unary_stream_rpc_method_handler, handler.unary_stream
    if not handler.response_streaming:
        return grpc.stream_unary_rpc_method_handler, handler.stream_unary
    return grpc.stream_stream_rpc_method_handler, handler.stream_stream

if TYPE_CHECKING:  # grpc's handler class is generic only in its type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]


#: The message of a call a delay ends at its deadline (grpc's own words for it).
DEADLINE_MESSAGE = "Deadline Exceeded"


def _outlives(seconds: float, remaining: float | None) -> bool:
    return remaining is not None and seconds >= remaining


class FaultInjector(FaultScript, grpc.ServerInterceptor, grpc.aio.ServerInterceptor):
    """A server interceptor that fails, delays or pushes back the calls it is told to.

    Put it in ``interceptors=`` of a sync or aio server (inside the octollm stack, as
    [`serve`][octollm_grpc.testing.serve] does, so injected failures are logged and counted
    like real ones), then plan with `fail_next`, `delay_next` and
    `pushback_next`, and read `records`. Faults apply before the handler runs
    (before it reads a request stream or sends a message), for all four RPC shapes. A delay
    as long as the call's remaining deadline or longer ends the call with
    ``DEADLINE_EXCEEDED`` once the deadline is spent (on the injected clock), as a server
    too slow for the caller would; the handler does not run.

    ``sleep`` / ``async_sleep`` carry out delays (pass a
    [`FakeClock`][octollm_grpc.testing.FakeClock]'s so tests never wait for real). On grpc.aio,
    handlers that are plain functions (grpc.aio runs them in a thread pool, where the aio
    context cannot abort) pass through untouched and unrecorded.

    Args:
        sleep: How a sync handler's ``delay`` waits.
        async_sleep: How an aio handler's ``delay`` waits.
    """

    def __init__(
        self,
        *,
        sleep: Callable[[float], object] = time.sleep,
        async_sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        super().__init__()
        self._sleep = sleep
        self._async_sleep = async_sleep

    # One signature per base class; the body serves both (see the module docstring).
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if inspect.isawaitable(handler):
            return self._wrap_aio_later(handler, method)
        return None if handler is None else self._wrap_sync(handler, method)

    # -- sync -------------------------------------------------------------------------------

    def _before(self, method: str, context: Any) -> None:
        remaining = time_remaining(context)
        fault = self.take(method, remaining)
        if fault is None:
            return
        if fault.action == "delay":
            assert fault.seconds is not None
            if _outlives(fault.seconds, remaining):
                # With a fake clock the caller's real deadline never passes: end the call as
                # a server too slow for it would end.
                assert remaining is not None
                self._sleep(max(remaining, 0.0))
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE)
            self._sleep(fault.seconds)
            return
        context.abort_with_status(status_for(fault, context.trailing_metadata()))

    def _wrap_sync(self, handler: Handler, method: str) -> Handler:
        make, behavior = _handler_shape(handler)
        if behavior is None:
            return handler

        # One plain function fits all shapes: it returns the response or the response iterator.
        def handle(request: Any, context: Any) -> Any:
            self._before(method, context)
            return behavior(request, context)

        return make(handle, handler.request_deserializer, handler.response_serializer)

    # -- aio --------------------------------------------------------------------------------

    async def _before_async(self, method: str, context: Any) -> None:
        remaining = time_remaining(context)
        fault = self.take(method, remaining)
        if fault is None:
            return
        if fault.action == "delay":
            assert fault.seconds is not None
            if _outlives(fault.seconds, remaining):
                assert remaining is not None
                await self._async_sleep(max(remaining, 0.0))
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE)
            await self._async_sleep(fault.seconds)
            return
        await context.abort_with_status(status_for(fault, context.trailing_metadata()))

    async def _wrap_aio_later(self, pending: Awaitable[Handler | None], method: str) -> Any:
        handler = await pending
        return None if handler is None else self._wrap_aio(handler, method)

    def _wrap_aio(self, handler: Handler, method: str) -> Handler:
        make, behavior = _handler_shape(handler)
        # grpc.aio dispatches on the handler's kind: the wrapper must keep it.
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                await self._before_async(method, context)
                async for response in behavior(request, context):
                    yield response

            wrapped: Any = stream
        elif inspect.iscoroutinefunction(behavior):

            async def unary(request: Any, context: Any) -> Any:
                await self._before_async(method, context)
                return await behavior(request, context)

            wrapped = unary
        else:
            return handler
        return make(wrapped, handler.request_deserializer, handler.response_serializer)
