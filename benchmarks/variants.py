"""The servers compared by the overhead benchmark: one handler, four ways to fail.

- ``bare``: no interceptors; the error handler calls ``context.abort(NOT_FOUND, ...)``, the
  throttled one ``context.abort(RESOURCE_EXHAUSTED, ...)``.
- ``ours``: ``server_interceptors()`` with its defaults (error mapping, request ids, logging,
  metrics) and a rate limit on the throttled method only (every other method is unguarded, so
  it costs them nothing); the error handler raises ``TaskNotFoundError``, and calls to the
  throttled method are refused by the rate limiter before its handler runs.
- ``ours_all``: the same plus the opt-in parts, a rate limit (never reached) and bearer-token
  auth with a scope check (every variant's client sends the token, so only the server differs).
- ``peer``: grpc-interceptor's ``ExceptionToStatusInterceptor``; the error handler raises its
  ``NotFound`` (less work than ours: a plain status, no log line, no metrics).
- ``peer_full``: the same work as ``ours`` assembled from peers (:mod:`benchmarks.peer_stack`:
  grpc-interceptor, grpcio-status rich details, a structlog JSON line, prometheus metrics, a
  request id); the error handler raises its ``PeerTaskNotFound``.
- ``floor``: one do-nothing server interceptor: what gRPC's interception machinery alone costs,
  the floor under every interceptor stack.
- ``ours_no_logs``, ``ours_no_metrics``, ``ours_no_ids``, ``ours_core``: ``ours`` with one part
  (or, for ``ours_core``, all three) switched off, for attributing its cost per part
  (``python -m benchmarks.pathcost --profile``).

Every variant answers GetTask with the same ~1 KiB message, so only the stack differs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf import struct_pb2

from benchmarks import payload

SERVER_VARIANTS = ("bare", "ours", "ours_all", "peer", "peer_full", "floor")
#: ``ours`` with parts switched off: variant -> the keywords of ``server_interceptors``.
ABLATIONS: dict[str, dict[str, bool]] = {
    "ours_no_logs": {"logger": False},
    "ours_no_metrics": {"metrics": False},
    "ours_no_ids": {"request_ids": False},
    "ours_core": {"logger": False, "metrics": False, "request_ids": False},
}
#: Every variant whose handlers are ours (they raise our errors; the throttled method is
#: refused by our rate limiter).
_OURS = ("ours", *ABLATIONS)
#: Client variants for attributing ``resilient_channel``'s cost per part
#: (:mod:`benchmarks.ir_client`): variant -> the parts switched off. ``retry``, ``budget`` and
#: ``breaker`` are ``resilient_channel``'s keywords set to ``None``; ``metrics`` drops the
#: client metrics, ``otel`` the OpenTelemetry hooks (as if ``opentelemetry-api`` were absent).
CLIENT_ABLATIONS: dict[str, tuple[str, ...]] = {
    "client_no_metrics": ("metrics",),
    "client_no_otel": ("otel",),
    "client_no_breaker": ("breaker",),
    "client_no_budget": ("budget",),
    "client_no_retry": ("retry",),
    "client_core": ("metrics", "otel", "breaker", "budget", "retry"),
}
TOKEN = "bench-token-5d1f0c"
#: Sent by every client of the overhead benchmark (only ``ours_all`` checks it).
AUTH_METADATA = (("authorization", f"Bearer {TOKEN}"),)

_RESPONSE = payload.task_message()


def _not_found_message(request: struct_pb2.Value) -> str:
    return f"Task {payload.task_id_of(request)} not found"


#: The limit ``ours`` puts on the throttled method: after the first call, every call is refused.
THROTTLE_LIMIT = 1
THROTTLE_WINDOW_S = 3600
#: What the bare server's throttled handler aborts with (our rate limiter's message).
THROTTLED_MESSAGE = f"Rate limit exceeded: {THROTTLE_LIMIT} requests per {THROTTLE_WINDOW_S}s"


def _throttled_error() -> Exception:
    from octollm_grpc.errors import RateLimitError

    return RateLimitError(limit=THROTTLE_LIMIT, window=THROTTLE_WINDOW_S,
                          retry_after=THROTTLE_WINDOW_S)


def configure_production_logging() -> None:
    """Our logging helper in production mode (JSON lines), writing to /dev/null here."""
    from octollm_grpc.server import configure_logging

    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the server process
    configure_logging(json=True, stream=sink)


class PassThrough(grpc.ServerInterceptor):
    """A server interceptor that does nothing."""

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        return continuation(handler_call_details)


class AioPassThrough(grpc.aio.ServerInterceptor):
    """The asyncio twin of :class:`PassThrough`."""

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        return await continuation(handler_call_details)


def _sync_raiser(variant: str) -> Callable[[struct_pb2.Value, grpc.ServicerContext], Any]:
    if variant in ("bare", "floor"):
        def abort(request: struct_pb2.Value, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.NOT_FOUND, _not_found_message(request))
        return abort
    if variant in (*_OURS, "ours_all"):
        from octollm_grpc.errors import TaskNotFoundError

        def raise_ours(request: struct_pb2.Value, context: grpc.ServicerContext) -> Any:
            raise TaskNotFoundError(payload.task_id_of(request))
        return raise_ours
    if variant == "peer":
        from grpc_interceptor.exceptions import NotFound

        def raise_peer(request: struct_pb2.Value, context: grpc.ServicerContext) -> Any:
            raise NotFound(_not_found_message(request))
        return raise_peer
    if variant == "peer_full":
        from benchmarks.peer_stack import PeerTaskNotFound

        def raise_peer_full(request: struct_pb2.Value, context: grpc.ServicerContext) -> Any:
            raise PeerTaskNotFound(payload.task_id_of(request))
        return raise_peer_full
    raise ValueError(f"unknown server variant {variant!r}")


def _aio_raiser(variant: str) -> Callable[..., Any]:
    if variant in ("bare", "floor"):
        async def abort(request: struct_pb2.Value, context: Any) -> Any:
            await context.abort(grpc.StatusCode.NOT_FOUND, _not_found_message(request))
        return abort
    if variant in (*_OURS, "ours_all"):
        from octollm_grpc.errors import TaskNotFoundError

        async def raise_ours(request: struct_pb2.Value, context: Any) -> Any:
            raise TaskNotFoundError(payload.task_id_of(request))
        return raise_ours
    if variant == "peer":
        from grpc_interceptor.exceptions import NotFound

        async def raise_peer(request: struct_pb2.Value, context: Any) -> Any:
            raise NotFound(_not_found_message(request))
        return raise_peer
    if variant == "peer_full":
        from benchmarks.peer_stack import PeerTaskNotFound

        async def raise_peer_full(request: struct_pb2.Value, context: Any) -> Any:
            raise PeerTaskNotFound(payload.task_id_of(request))
        return raise_peer_full
    raise ValueError(f"unknown server variant {variant!r}")


def handlers(variant: str, stack: str) -> grpc.GenericRpcHandler:
    """The Bench service for ``variant`` on ``stack`` (``"sync"`` or ``"aio"``)."""
    if stack == "sync":
        def get_task(request: struct_pb2.Value, context: Any) -> struct_pb2.Value:
            return _RESPONSE

        def throttled(request: struct_pb2.Value, context: Any) -> struct_pb2.Value:
            if variant in _OURS:
                # Reached by the first call only (the limiter refuses the rest): it fails
                # the same way, so every call of the scenario ends RESOURCE_EXHAUSTED.
                raise _throttled_error()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, THROTTLED_MESSAGE)
        missing: Callable[..., Any] = _sync_raiser(variant)
    else:
        async def get_task_aio(request: struct_pb2.Value, context: Any) -> struct_pb2.Value:
            return _RESPONSE

        async def throttled_aio(request: struct_pb2.Value, context: Any) -> struct_pb2.Value:
            if variant in _OURS:
                raise _throttled_error()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, THROTTLED_MESSAGE)
        get_task = get_task_aio  # type: ignore[assignment]
        throttled = throttled_aio  # type: ignore[assignment]
        missing = _aio_raiser(variant)
    methods = {
        payload.GET_TASK: grpc.unary_unary_rpc_method_handler(
            get_task, request_deserializer=payload.deserialize,
            response_serializer=payload.serialize),
        payload.GET_MISSING_TASK: grpc.unary_unary_rpc_method_handler(
            missing, request_deserializer=payload.deserialize,
            response_serializer=payload.serialize),
        payload.GET_THROTTLED_TASK: grpc.unary_unary_rpc_method_handler(
            throttled, request_deserializer=payload.deserialize,
            response_serializer=payload.serialize),
    }
    return grpc.method_handlers_generic_handler(payload.SERVICE, methods)


def interceptors(variant: str, stack: str) -> Sequence[Any]:
    """The server interceptors of ``variant`` on ``stack``."""
    if variant == "bare":
        return ()
    if variant == "floor":
        return (PassThrough(),) if stack == "sync" else (AioPassThrough(),)
    if variant == "peer":
        import grpc_interceptor

        if stack == "sync":
            return (grpc_interceptor.ExceptionToStatusInterceptor(),)
        return (grpc_interceptor.AsyncExceptionToStatusInterceptor(),)
    if variant == "peer_full":
        from benchmarks.peer_stack import AioPeerStack, PeerStack

        return (PeerStack(),) if stack == "sync" else (AioPeerStack(),)
    if variant in (*_OURS, "ours_all"):
        from octollm_grpc.server import BearerAuth, RateLimit, RateLimiter, StaticTokens
        from octollm_grpc.server import server_interceptors as sync_stack
        from octollm_grpc.server.aio import server_interceptors as aio_stack

        configure_production_logging()
        stack_of: Callable[..., Sequence[Any]] = sync_stack if stack == "sync" else aio_stack
        if variant in _OURS:
            return tuple(stack_of(rate_limit=RateLimiter(None, methods={
                payload.GET_THROTTLED_TASK_PATH: RateLimit(
                    limit=THROTTLE_LIMIT, window=THROTTLE_WINDOW_S)}),
                **ABLATIONS.get(variant, {})))
        return tuple(stack_of(
            rate_limit=RateLimiter(RateLimit(limit=1_000_000_000)),
            auth=BearerAuth(StaticTokens({TOKEN: ["tasks.read"]}), default_scopes=["tasks.read"]),
        ))
    raise ValueError(f"unknown server variant {variant!r}")
