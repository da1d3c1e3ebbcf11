"""The ``grpc.server`` interceptor: thin call wrapping around the shared core."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import grpc

from octollm_grpc.errors import OctoLLMError
from octollm_grpc.server._core import MethodPlan, Pipeline, SyncCall
from octollm_grpc.server._handlers import UNDECODABLE, Handler, ServicerContext, Wrapping
from octollm_grpc.status._limits import RichStatus

__all__ = ["ServerInterceptor"]

Behavior = Callable[[Any, Any], Any]  # the application's handler


class _Call(SyncCall):
    """A call on ``grpc.server``: ended with ``abort_with_status``."""

    __slots__ = ()

    def end_failed(self, exc: BaseException) -> None:
        context = cast(grpc.ServicerContext, self.context)
        failure = self.pipeline.fail(
            self, exc,
            # Sync context.abort() sets the code, then raises a bare Exception().
            aborted=type(exc) is Exception and not exc.args and self.context.code() is not None,
            cancelled=_is_cancelled(exc, context),
        )
        if failure.status is None:
            if failure.trailers is not None:
                context.set_trailing_metadata(failure.trailers)
            return
        # Both status types are registered as grpc.Status (an ABC), which the stubs cannot see.
        context.abort_with_status(cast(grpc.Status, failure.status))

    def end_refused(self, status: RichStatus) -> None:
        cast(grpc.ServicerContext, self.context).abort_with_status(cast(grpc.Status, status))


def _is_cancelled(exc: BaseException, context: grpc.ServicerContext) -> bool:
    if isinstance(exc, GeneratorExit):
        return True  # grpc stopped consuming the response stream: the client went away
    # A cancelled call's request iterator raises a bare grpc.RpcError.
    return (
        isinstance(exc, grpc.RpcError)
        and not isinstance(exc, OctoLLMError)
        and not context.is_active()
    )


def _unary_response(
    pipeline: Pipeline, plan: MethodPlan, behavior: Behavior
) -> Callable[[Any, ServicerContext], Any]:
    # grpc's context is a ServicerContext: grpcio's sync context has code() and details()
    # (public since 1.38), which its type stubs lack.
    guarded = plan.guarded

    # What ``with _Call.begin(...): return behavior(...)`` does, spelled out: two frames
    # (__enter__, __exit__) fewer on every call.
    def handle(request: Any, context: ServicerContext) -> Any:
        call = _Call.begin(pipeline, plan, context, request)
        if guarded or request is UNDECODABLE:
            call.__enter__()  # admits; a refused call is ended and raises
        try:
            response = behavior(request, context)
        except BaseException as exc:
            call.__exit__(type(exc), exc, exc.__traceback__)
            raise
        call.finish()
        return response

    return handle


def _stream_response(
    pipeline: Pipeline, plan: MethodPlan, behavior: Behavior
) -> Callable[[Any, ServicerContext], Iterator[Any]]:
    # Exceptions from a response generator surface while grpc iterates, after the handler
    # returned: wrapping the iterator is the only place to catch them.
    def handle(request: Any, context: ServicerContext) -> Iterator[Any]:
        with _Call.begin(pipeline, plan, context, request):
            yield from behavior(request, context)

    return handle


class ServerInterceptor(Wrapping, grpc.ServerInterceptor):
    """The octollm stack as one ``grpc.server`` interceptor (see
    [`server_interceptors`][octollm_grpc.server.server_interceptors]).

    Each method's handler is wrapped once and cached; unregistered methods pass through.
    """

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        return self.wrapped(continuation(handler_call_details), handler_call_details.method)

    def wrap_behavior(self, plan: MethodPlan, behavior: Any, response_streaming: bool) -> Any:
        if behavior is None:
            return None
        wrap = _stream_response if response_streaming else _unary_response
        return wrap(self.pipeline, plan, behavior)
