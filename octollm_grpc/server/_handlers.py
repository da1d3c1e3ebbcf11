"""Handlers as grpc sees them: shape, context, request parser, and wrapping each once.

Both interceptors (`octollm_grpc.server._sync`,
[`octollm_grpc.server.aio`][octollm_grpc.server.aio]) wrap a
method's handler through `Wrapping`; only how a behaviour is wrapped differs by stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar, runtime_checkable

import grpc

from octollm_grpc.errors import InvalidInputError
from octollm_grpc.server._failures import Trailers

if TYPE_CHECKING:  # the core imports this module
    from octollm_grpc.server._core import MethodPlan, Pipeline

__all__ = [
    "UNDECODABLE",
    "HandlerCache",
    "Metadata",
    "ServicerContext",
    "Wrapping",
    "handler_shape",
    "parse_safely",
    "rpc_type_of",
    "split_method",
    "undecodable_error",
]

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Metadata = Iterable[tuple[str, str | bytes]]


@runtime_checkable
class ServicerContext(Protocol):
    """What the core uses of a servicer context.

    ``grpc.ServicerContext`` (sync), ``grpc.aio.ServicerContext`` and
    `octollm_grpc.server._threaded.ThreadContext` all have it. (grpcio's sync context
    has ``code()`` and ``details()`` since 1.38, as public API; its type stubs lack them.)
    """

    def invocation_metadata(self) -> Metadata | None: ...
    def set_trailing_metadata(self, trailing_metadata: Trailers) -> None: ...
    def trailing_metadata(self) -> Metadata | None: ...
    def code(self) -> grpc.StatusCode | None: ...
    def details(self) -> str | bytes | None: ...  # bytes on the sync stack
    def peer(self) -> str: ...
    def time_remaining(self) -> float | None: ...


def rpc_type_of(handler: Handler) -> str:
    """go-grpc-prometheus's ``grpc_type`` of a handler."""
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def handler_shape(
    handler: Handler,
) -> tuple[Callable[..., Handler], Any]:
    """The ``grpc.*_rpc_method_handler`` factory for ``handler``'s shape, and its behaviour.

    grpc dispatches on the streaming flags, so the wrappers do too.
    """
    if not handler.request_streaming:
        if not handler.response_streaming:
            return grpc.unary_unary_rpc_method_handler, handler.unary_unary
        return grpc.unary_stream_rpc_method_handler, handler.unary_stream
    if not handler.response_streaming:
        return grpc.stream_unary_rpc_method_handler, handler.stream_unary
    return grpc.stream_stream_rpc_method_handler, handler.stream_stream


def split_method(method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> ``("pkg.Service", "Method")``."""
    service, sep, name = method.lstrip("/").rpartition("/")
    return (service, name) if sep else ("", method)


class _Undecodable:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<undecodable request>"


#: What `parse_safely` gives for bytes that do not parse; handlers never receive it.
UNDECODABLE: Any = _Undecodable()


def parse_safely(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning `UNDECODABLE` instead of raising.

    Left alone, grpcio answers a request message that does not parse with ``INTERNAL`` (sync)
    or with ``UNKNOWN`` and the parser's exception type and text (aio). Through this the call
    runs the pipeline (rate limit, auth) and ends with `undecodable_error`, logged and
    counted like any other failure.
    """
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - any parser failure means "not a valid request"
            return UNDECODABLE

    return parse


def undecodable_error() -> InvalidInputError:
    """The error a call whose request did not parse ends with (``INVALID_ARGUMENT``)."""
    return InvalidInputError("The request message could not be parsed")


_H = TypeVar("_H")


class HandlerCache(Generic[_H]):
    """Wrapped handlers by method, so wrapping happens once per method and handler.

    A method whose handler object changes is rewrapped; the cache is cleared when it reaches
    ``cap`` entries, so catch-all generic handlers cannot grow it without bound.
    """

    __slots__ = ("_cap", "_entries", "_wrap")

    def __init__(self, wrap: Callable[[_H, str], _H], cap: int = 1024) -> None:
        self._wrap = wrap
        self._cap = cap
        self._entries: dict[str, tuple[_H, _H]] = {}

    def get(self, method: str, handler: _H) -> _H:
        """The wrapped form of ``handler`` serving ``method``."""
        entry = self._entries.get(method)
        if entry is not None and entry[0] is handler:
            return entry[1]
        wrapped = self._wrap(handler, method)
        if len(self._entries) >= self._cap:
            self._entries.clear()
        self._entries[method] = (handler, wrapped)
        return wrapped


class Wrapping:
    """What both interceptors share: the pipeline, and each method's handler wrapped once.

    A subclass says how a behaviour is wrapped (`wrap_behavior`); the shape, the
    request parser and the serializers are kept as grpc dispatches on them.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        #: What every wrapped call runs through.
        self.pipeline = pipeline
        self._cache: HandlerCache[Handler] = HandlerCache(self._rewrap)

    def wrapped(self, handler: Handler | None, method: str) -> Handler | None:
        """``handler`` wrapped in the pipeline (``None``, an unregistered method, passes)."""
        return None if handler is None else self._cache.get(method, handler)

    def wrap_behavior(self, plan: MethodPlan, behavior: Any, response_streaming: bool) -> Any:
        """``behavior`` wrapped for this stack, or ``None`` to serve the handler as it is."""
        raise NotImplementedError

    def _rewrap(self, handler: Handler, method: str) -> Handler:
        plan = self.pipeline.plan(method, rpc_type_of(handler))
        make, behavior = handler_shape(handler)
        wrapped = self.wrap_behavior(plan, behavior, handler.response_streaming)
        if wrapped is None:
            return handler
        # A single request message is parsed before the handler: failures come to us.
        deserializer = handler.request_deserializer
        parse = deserializer if handler.request_streaming else parse_safely(deserializer)
        return make(wrapped, parse, handler.response_serializer)
