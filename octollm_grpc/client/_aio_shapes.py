"""One ``grpc.aio`` interceptor per call shape, each handing its calls to one handler.

``grpc.aio`` files an interceptor under the first call shape it implements only (an
``if``/``elif`` chain over the four interceptor classes), so a layer that guards every shape
must be four objects. These adapters are those objects; the layer itself is written once
(the observers in `octollm_grpc.client._observe`, the retry layer in
`octollm_grpc.client._aio_interceptors`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from grpc import aio

__all__ = ["Handler", "per_shape"]

#: ``handler(continuation, client_call_details, request_or_iterator)``: the call object.
Handler = Callable[[Any, aio.ClientCallDetails, Any], Awaitable[Any]]


class _UnaryUnary(aio.UnaryUnaryClientInterceptor):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                                    request: Any) -> Any:
        return await self.handler(continuation, client_call_details, request)


class _UnaryStream(aio.UnaryStreamClientInterceptor):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any,
                                     request: Any) -> Any:
        return await self.handler(continuation, client_call_details, request)


class _StreamUnary(aio.StreamUnaryClientInterceptor):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                                     request_iterator: Any) -> Any:
        return await self.handler(continuation, client_call_details, request_iterator)


class _StreamStream(aio.StreamStreamClientInterceptor):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                      request_iterator: Any) -> Any:
        return await self.handler(continuation, client_call_details, request_iterator)


def per_shape(unary_unary: Handler, unary_stream: Handler, stream_unary: Handler,
              stream_stream: Handler) -> list[aio.ClientInterceptor]:
    """The four interceptors of one layer, in this order, each calling its handler."""
    return [_UnaryUnary(unary_unary), _UnaryStream(unary_stream),
            _StreamUnary(stream_unary), _StreamStream(stream_stream)]
