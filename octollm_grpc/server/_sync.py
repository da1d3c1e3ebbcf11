"""The ``grpc.server`` interceptor: thin call wrapping around the shared core."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

from octollm_grpc.errors import OctoLLMError
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

__all__ = ["ServerInterceptor"]

Behavior = Callable[[Any, Any], Any]


def _is_abort(exc: BaseException, context: Any) -> bool:
    # Sync context.abort() sets the code, then raises a bare Exception().
    return type(exc) is Exception and not exc.args and context.code() is not None


def _is_cancelled(exc: BaseException, context: Any) -> bool:
    if isinstance(exc, GeneratorExit):
        return True  # grpc stopped consuming the response stream: the client went away
    # A cancelled call's request iterator raises a bare grpc.RpcError.
    return (
        isinstance(exc, grpc.RpcError)
        and not isinstance(exc, OctoLLMError)
        and not context.is_active()
    )


def _fail(
    pipeline: Pipeline, call: Any, exc: BaseException, context: Any
) -> NoReturn:
    failure = pipeline.fail(
        call, exc, context, aborted=_is_abort(exc, context), cancelled=_is_cancelled(exc, context)
    )
    if failure.status is None:
        if failure.trailers is not None:
            context.set_trailing_metadata(failure.trailers)
        raise exc
    context.abort_with_status(failure.status)
    raise AssertionError("abort_with_status returned")  # pragma: no cover - it always raises


def _unary_response(pipeline: Pipeline, plan: MethodPlan, behavior: Behavior) -> Behavior:
    def handle(request: Any, context: Any) -> Any:
        call = pipeline.begin(plan, context)
        try:
            if plan.guarded:
                pipeline.admit(call, context)
            if request is UNDECODABLE:
                raise undecodable_error()
            response = behavior(request, context)
        except Exception as exc:  # noqa: BLE001 - every failure is mapped, none escapes raw
            _fail(pipeline, call, exc, context)
        else:
            pipeline.succeed(call, context)
            return response
        finally:
            pipeline.end(call)

    return handle


def _stream_response(
    pipeline: Pipeline, plan: MethodPlan, behavior: Behavior
) -> Callable[[Any, Any], Iterator[Any]]:
    # Exceptions from a response generator surface while grpc iterates, after the handler
    # returned: wrapping the iterator is the only place to catch them.
    def handle(request: Any, context: Any) -> Iterator[Any]:
        call = pipeline.begin(plan, context)
        try:
            if plan.guarded:
                pipeline.admit(call, context)
            if request is UNDECODABLE:
                raise undecodable_error()
            yield from behavior(request, context)
        except (Exception, GeneratorExit) as exc:  # noqa: BLE001 - as above, mid-stream too
            _fail(pipeline, call, exc, context)
        else:
            pipeline.succeed(call, context)
        finally:
            pipeline.end(call)

    return handle


class ServerInterceptor(grpc.ServerInterceptor):
    """The octollm stack as one ``grpc.server`` interceptor (see :func:`server_interceptors`).

    Each method's handler is wrapped once and cached; unregistered methods pass through.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._cache: HandlerCache[grpc.RpcMethodHandler[Any, Any]] = HandlerCache(self._wrap)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return self._cache.get(handler_call_details.method, handler)

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        plan = self.pipeline.plan(method, rpc_type_of(handler))
        req, resp = handler.request_streaming, handler.response_streaming
        make, behavior = handler_shape(handler)
        if behavior is None:
            return handler
        wrap = _stream_response if resp else _unary_response
        wrapped = wrap(self.pipeline, plan, behavior)
        # A single request message is parsed before the handler: failures come to us.
        parse = handler.request_deserializer if req else parse_safely(handler.request_deserializer)
        return make(wrapped, parse, handler.response_serializer)
