"""The octollm server stack for ``grpc.aio.server``.

``server_interceptors()`` here is the aio twin of
[`octollm_grpc.server.server_interceptors`][octollm_grpc.server.server_interceptors];
both run the same core. Wrappers keep the handler's kind (coroutine function or async
generator function), as grpc.aio dispatches on it. Handlers that are plain functions (run by
grpc.aio in its migration thread pool) get the same stack from `._threaded`, still as
plain functions: auth, rate limit, mapping, logging, metrics and the request id, like the rest.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Unpack, cast

import grpc
import grpc.aio

from octollm_grpc.server._core import AsyncCall, MethodPlan, Pipeline
from octollm_grpc.server._handlers import UNDECODABLE, Handler, Wrapping
from octollm_grpc.server._options import ServerKeywords, ServerOptions, options_of
from octollm_grpc.server._threaded import threaded_behavior
from octollm_grpc.status._limits import RichStatus

__all__ = [
    "server_interceptors",
]

_Context = grpc.aio.ServicerContext[Any, Any]
_CANCELLATION = (asyncio.CancelledError, GeneratorExit)


class _Call(AsyncCall):
    """A call on ``grpc.aio.server``: ended with ``await context.abort(...)``."""

    __slots__ = ()

    async def end_failed(self, exc: BaseException) -> None:
        failure = self.pipeline.fail(
            self, exc,
            # aio abort raises AbortError after sending the status: it must propagate unchanged.
            aborted=isinstance(exc, grpc.aio.AbortError),
            cancelled=isinstance(exc, _CANCELLATION),
        )
        if failure.status is not None:
            status = failure.status
            context = cast(_Context, self.context)
            await context.abort(status.code, status.details, status.trailing_metadata)

    async def end_refused(self, status: RichStatus) -> None:
        await cast(_Context, self.context).abort(status.code, status.details,
                                                 status.trailing_metadata)


def _coroutine(
    pipeline: Pipeline, plan: MethodPlan, behavior: Callable[..., Awaitable[Any]]
) -> Callable[[Any, _Context], Awaitable[Any]]:
    # Unary responses, and streaming handlers that write with context.write().
    guarded = plan.guarded

    # ``async with _Call.begin(...): return await behavior(...)``, spelled out: two frames
    # (__aenter__, __aexit__) fewer on every call.
    async def handle(request: Any, context: _Context) -> Any:
        call = _Call.begin(pipeline, plan, context, request)
        if guarded or request is UNDECODABLE:
            await call.__aenter__()  # admits; a refused call is ended and raises
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            await call.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        call.finish()
        return response

    return handle


def _async_generator(
    pipeline: Pipeline, plan: MethodPlan, behavior: Callable[..., AsyncIterator[Any]]
) -> Callable[[Any, _Context], AsyncIterator[Any]]:
    # Errors raised after some messages were yielded end the stream with the mapped status;
    # the messages already yielded are delivered first.
    async def handle(request: Any, context: _Context) -> AsyncIterator[Any]:
        async with _Call.begin(pipeline, plan, context, request):
            responses = behavior(request, context)
            try:
                async for response in responses:
                    yield response
            except _CANCELLATION:
                # Close the handler's generator (its finally blocks run) before the call ends.
                aclose = getattr(responses, "aclose", None)
                if aclose is not None:
                    await aclose()
                raise

    return handle


class ServerInterceptor(Wrapping, grpc.aio.ServerInterceptor):
    """The octollm stack as one ``grpc.aio.server`` interceptor (see
    [`server_interceptors`][octollm_grpc.server.server_interceptors]).

    Each method's handler is wrapped once and cached; unregistered methods pass through.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        return self.wrapped(await continuation(handler_call_details), handler_call_details.method)

    def wrap_behavior(self, plan: MethodPlan, behavior: Any, response_streaming: bool) -> Any:
        # The same dispatch as grpc.aio's: async generator function, coroutine function, and
        # any other callable is a plain function it runs in its thread pool.
        if inspect.isasyncgenfunction(behavior):
            return _async_generator(self.pipeline, plan, behavior)
        if inspect.iscoroutinefunction(behavior):
            return _coroutine(self.pipeline, plan, behavior)
        if callable(behavior):
            loop = asyncio.get_running_loop()  # wrapping happens on the server's loop
            return threaded_behavior(self.pipeline, plan, behavior, response_streaming, loop)
        # Never serve a handler the stack does not cover (fail closed, not open).
        raise TypeError(f"{plan.method}: handler {behavior!r} is not callable")


def server_interceptors(
    options: ServerOptions | None = None, **keywords: Unpack[ServerKeywords]
) -> list[grpc.aio.ServerInterceptor]:
    """The recommended stack for ``grpc.aio.server(interceptors=...)``.

    Same parameters and behaviour as
    [`octollm_grpc.server.server_interceptors`][octollm_grpc.server.server_interceptors]; an
    ``auth`` verifier may be a coroutine function here.

    Args:
        options: A [`ServerOptions`][octollm_grpc.server.ServerOptions]; keywords replace its
            fields.
        **keywords: The fields of ``ServerOptions``.

    Returns:
        The interceptors for ``grpc.aio.server(interceptors=...)``.

    Raises:
        TypeError: An unknown keyword.
    """
    return [ServerInterceptor(Pipeline(options_of(options, keywords)))]
