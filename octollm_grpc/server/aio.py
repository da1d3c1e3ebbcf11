"""The octollm server stack for ``grpc.aio.server``.

``server_interceptors()`` here is the aio twin of :func:`octollm_grpc.server.server_interceptors`;
both run the same core. Wrappers keep the handler's kind (coroutine function or async
generator function), as grpc.aio dispatches on it. Handlers that are plain functions (run by
grpc.aio in its migration thread pool) get the same stack from :mod:`._threaded`, still as
plain functions: auth, rate limit, mapping, logging, metrics and the request id, like the rest.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, Unpack

import grpc
import grpc.aio

from octollm_grpc.server._core import (
    UNDECODABLE,
    HandlerCache,
    MethodPlan,
    Pipeline,
    handler_shape,
    parse_safely,
    rpc_type_of,
    undecodable_error,
)
from octollm_grpc.server._threaded import threaded_behavior
from octollm_grpc.server.options import ServerKeywords, ServerOptions, options_of

__all__ = ["ServerInterceptor", "ServerKeywords", "ServerOptions", "server_interceptors"]

_Context = grpc.aio.ServicerContext[Any, Any]
_CANCELLATION = (asyncio.CancelledError, GeneratorExit)


async def _fail(pipeline: Pipeline, call: Any, exc: BaseException, context: _Context) -> NoReturn:
    failure = pipeline.fail(
        call,
        exc,
        context,
        # aio abort raises AbortError after sending the status: it must propagate unchanged.
        aborted=isinstance(exc, grpc.aio.AbortError),
        cancelled=isinstance(exc, _CANCELLATION),
    )
    if failure.status is None:
        raise exc
    status = failure.status
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort returned")  # pragma: no cover - it always raises


def _coroutine(
    pipeline: Pipeline, plan: MethodPlan, behavior: Callable[..., Awaitable[Any]]
) -> Callable[[Any, _Context], Awaitable[Any]]:
    # Unary responses, and streaming handlers that write with context.write().
    async def handle(request: Any, context: _Context) -> Any:
        call = pipeline.begin(plan, context)
        try:
            if plan.guarded:
                await pipeline.admit_async(call, context)
            if request is UNDECODABLE:
                raise undecodable_error()
            response = await behavior(request, context)
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - every failure mapped
            await _fail(pipeline, call, exc, context)
        else:
            pipeline.succeed(call, context)
            return response
        finally:
            pipeline.end(call)

    return handle


def _async_generator(
    pipeline: Pipeline, plan: MethodPlan, behavior: Callable[..., AsyncIterator[Any]]
) -> Callable[[Any, _Context], AsyncIterator[Any]]:
    # Errors raised after some messages were yielded end the stream with the mapped status;
    # the messages already yielded are delivered first.
    async def handle(request: Any, context: _Context) -> AsyncIterator[Any]:
        call = pipeline.begin(plan, context)
        responses = None
        try:
            if plan.guarded:
                await pipeline.admit_async(call, context)
            if request is UNDECODABLE:
                raise undecodable_error()
            responses = behavior(request, context)
            async for response in responses:
                yield response
        except (Exception, *_CANCELLATION) as exc:  # noqa: BLE001 - as above, mid-stream too
            if isinstance(exc, _CANCELLATION) and responses is not None:
                aclose = getattr(responses, "aclose", None)
                if aclose is not None:
                    await aclose()
            await _fail(pipeline, call, exc, context)
        else:
            pipeline.succeed(call, context)
        finally:
            pipeline.end(call)

    return handle


def _wrap_behavior(
    pipeline: Pipeline, plan: MethodPlan, behavior: Any, response_streaming: bool
) -> Any:
    # The same dispatch as grpc.aio's: async generator function, coroutine function, and any
    # other callable is a plain function it runs in its thread pool.
    if inspect.isasyncgenfunction(behavior):
        return _async_generator(pipeline, plan, behavior)
    if inspect.iscoroutinefunction(behavior):
        return _coroutine(pipeline, plan, behavior)
    if callable(behavior):
        loop = asyncio.get_running_loop()  # wrapping happens on the server's loop
        return threaded_behavior(pipeline, plan, behavior, response_streaming, loop)
    # Never serve a handler the stack does not cover (fail closed, not open).
    raise TypeError(f"{plan.method}: handler {behavior!r} is not callable")


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """The octollm stack as one ``grpc.aio.server`` interceptor (see :func:`server_interceptors`).

    Each method's handler is wrapped once and cached; unregistered methods pass through.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._cache: HandlerCache[grpc.RpcMethodHandler[Any, Any]] = HandlerCache(self._wrap)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._cache.get(handler_call_details.method, handler)

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        plan = self.pipeline.plan(method, rpc_type_of(handler))
        req = handler.request_streaming
        make, behavior = handler_shape(handler)
        wrapped = _wrap_behavior(self.pipeline, plan, behavior, handler.response_streaming)
        # A single request message is parsed before the handler: failures come to us.
        parse = handler.request_deserializer if req else parse_safely(handler.request_deserializer)
        return make(wrapped, parse, handler.response_serializer)


def server_interceptors(
    options: ServerOptions | None = None, **keywords: Unpack[ServerKeywords]
) -> list[grpc.aio.ServerInterceptor]:
    """The recommended stack for ``grpc.aio.server(interceptors=...)``.

    Same parameters and behaviour as :func:`octollm_grpc.server.server_interceptors`; an
    ``auth`` verifier may be a coroutine function here.
    """
    return [ServerInterceptor(Pipeline(options_of(options, keywords)))]
