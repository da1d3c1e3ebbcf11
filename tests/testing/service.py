"""A small echo service in all four RPC shapes, sync and aio, for the testing kit's tests."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from octollm_grpc import errors

SERVICE = "kit.Echo"
UNARY = f"/{SERVICE}/Unary"
SERVER_STREAM = f"/{SERVICE}/ServerStream"
CLIENT_STREAM = f"/{SERVICE}/ClientStream"
BIDI = f"/{SERVICE}/Bidi"
MISSING = f"/{SERVICE}/Missing"
SHAPES = (UNARY, SERVER_STREAM, CLIENT_STREAM, BIDI)
#: Raised by the handler of any shape for the request b"missing".
NOT_FOUND = errors.TaskNotFoundError("task-404")


class Echo:
    """Counts the calls its handlers ran (faults are injected before a handler runs)."""

    def __init__(self) -> None:
        self.runs = 0
        self._lock = threading.Lock()

    def _ran(self, request: bytes) -> bytes:
        with self._lock:
            self.runs += 1
        if request == b"missing":
            raise NOT_FOUND
        return request

    # -- sync --------------------------------------------------------------------------------

    def unary(self, request: bytes, context: Any) -> bytes:
        return self._ran(request)

    def server_stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        yield self._ran(request)
        yield request

    def client_stream(self, requests: Iterator[bytes], context: Any) -> bytes:
        return self._ran(b"".join(requests))

    def bidi(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        received = list(requests)
        self._ran(b"".join(received))
        yield from received

    # -- aio ---------------------------------------------------------------------------------

    async def aio_unary(self, request: bytes, context: Any) -> bytes:
        return self._ran(request)

    async def aio_server_stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield self._ran(request)
        yield request

    async def aio_client_stream(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        return self._ran(b"".join([r async for r in requests]))

    async def aio_bidi(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        received = [r async for r in requests]
        self._ran(b"".join(received))
        for message in received:
            yield message

    def handler(self, aio: bool = False) -> grpc.GenericRpcHandler:
        prefix = "aio_" if aio else ""
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(getattr(self, prefix + "unary")),
            "ServerStream": grpc.unary_stream_rpc_method_handler(
                getattr(self, prefix + "server_stream")),
            "ClientStream": grpc.stream_unary_rpc_method_handler(
                getattr(self, prefix + "client_stream")),
            "Bidi": grpc.stream_stream_rpc_method_handler(getattr(self, prefix + "bidi")),
        })


def call(channel: grpc.Channel, method: str, request: bytes = b"hi",
         timeout: float | None = 10) -> list[bytes]:
    """Call ``method`` of any shape on a sync channel; the responses as a list."""
    if method in (UNARY, MISSING):
        return [channel.unary_unary(method)(request, timeout=timeout)]
    if method == SERVER_STREAM:
        return list(channel.unary_stream(method)(request, timeout=timeout))
    if method == CLIENT_STREAM:
        return [channel.stream_unary(method)(iter([request]), timeout=timeout)]
    return list(channel.stream_stream(method)(iter([request]), timeout=timeout))


async def aio_call(channel: grpc.aio.Channel, method: str, request: bytes = b"hi",
                   timeout: float | None = 10) -> list[bytes]:
    """The aio form of :func:`call`."""
    if method in (UNARY, MISSING):
        return [await channel.unary_unary(method)(request, timeout=timeout)]
    if method == SERVER_STREAM:
        return [r async for r in channel.unary_stream(method)(request, timeout=timeout)]
    if method == CLIENT_STREAM:
        return [await channel.stream_unary(method)(iter([request]), timeout=timeout)]
    return [r async for r in channel.stream_stream(method)(iter([request]), timeout=timeout)]
