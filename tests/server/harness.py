"""A four-shape test service (sync and aio) driven by a script, and clients for each shape.

Methods of ``test.Shapes``: ``Unary``, ``ServerStream``, ``ClientStream``, ``Bidi``. Messages
are raw bytes. Each handler first sends ``script.messages`` responses (streaming shapes), then
raises ``script.error()`` if one is set, else finishes with ``b"done"``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

SERVICE = "test.Shapes"
SHAPES = ("unary", "server_stream", "client_stream", "bidi_stream")
METHODS = {
    "unary": "Unary",
    "server_stream": "ServerStream",
    "client_stream": "ClientStream",
    "bidi_stream": "Bidi",
}


def path(shape: str) -> str:
    """The full method path of a shape."""
    return f"/{SERVICE}/{METHODS[shape]}"


@dataclass
class Script:
    """What the handlers do; tests set it before calling."""

    error: Callable[[], BaseException] | None = None
    messages: int = 0
    before: Callable[[Any], None] | None = None
    """Called with the context first (sync and aio alike), e.g. to set trailers."""
    seen: list[Any] = field(default_factory=list)

    def start(self, context: Any) -> None:
        if self.before is not None:
            self.before(context)

    def finish(self) -> None:
        if self.error is not None:
            raise self.error()


def sync_handlers(script: Script) -> list[grpc.GenericRpcHandler]:
    """The four shapes as sync handlers."""

    def unary(request: bytes, context: Any) -> bytes:
        script.start(context)
        script.finish()
        return b"done"

    def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
        script.start(context)
        for i in range(script.messages):
            yield b"m%d" % i
        script.finish()
        yield b"done"

    def client_stream(requests: Iterator[bytes], context: Any) -> bytes:
        script.start(context)
        script.seen.append(list(requests))
        script.finish()
        return b"done"

    def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        script.start(context)
        # Reads every request first: an aio client still writing when the call ends may see
        # INTERNAL ("Failed execute_batch") instead of the status, a client-side race.
        for i, _ in enumerate(requests):
            if i < script.messages:
                yield b"m%d" % i
        script.finish()
        yield b"done"

    return [grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    })]


def aio_handlers(script: Script) -> list[grpc.GenericRpcHandler]:
    """The four shapes as aio handlers (coroutines and async generators)."""

    async def unary(request: bytes, context: Any) -> bytes:
        script.start(context)
        await asyncio.sleep(0)
        script.finish()
        return b"done"

    async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        script.start(context)
        for i in range(script.messages):
            yield b"m%d" % i
        script.finish()
        yield b"done"

    async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
        script.start(context)
        script.seen.append([r async for r in requests])
        script.finish()
        return b"done"

    async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        script.start(context)
        sent = 0
        async for _ in requests:  # every request first, as in the sync bidi handler
            if sent < script.messages:
                yield b"m%d" % sent
                sent += 1
        script.finish()
        yield b"done"

    return [grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    })]


@dataclass
class Outcome:
    """What a client saw: the messages, then the error (or ``None``) and trailing metadata."""

    messages: list[bytes]
    error: grpc.RpcError | None
    trailers: dict[str, Any]


REQUESTS = (b"r0", b"r1", b"r2", b"r3", b"r4")


def call_sync(
    target: str, shape: str, metadata: Sequence[tuple[str, str]] = (), timeout: float = 5.0
) -> Outcome:
    """Call ``shape`` on a sync channel and collect everything the client sees."""
    with grpc.insecure_channel(target) as channel:
        messages: list[bytes] = []
        md = tuple(metadata)
        try:
            if shape == "unary":
                response, call = channel.unary_unary(path(shape)).with_call(
                    b"req", metadata=md, timeout=timeout)
                messages.append(response)
            elif shape == "client_stream":
                response, call = channel.stream_unary(path(shape)).with_call(
                    iter(REQUESTS), metadata=md, timeout=timeout)
                messages.append(response)
            else:
                if shape == "server_stream":
                    call = channel.unary_stream(path(shape))(b"req", metadata=md, timeout=timeout)
                else:
                    call = channel.stream_stream(path(shape))(
                        iter(REQUESTS), metadata=md, timeout=timeout)
                for message in call:
                    messages.append(message)
        except grpc.RpcError as err:
            return Outcome(messages, err, dict(err.trailing_metadata() or ()))  # type: ignore[attr-defined]
        return Outcome(messages, None, dict(call.trailing_metadata() or ()))


async def call_aio(
    target: str, shape: str, metadata: Sequence[tuple[str, str]] = (), timeout: float = 5.0
) -> Outcome:
    """Call ``shape`` on an aio channel and collect everything the client sees."""

    async def requests() -> AsyncIterator[bytes]:
        for r in REQUESTS:
            yield r

    async with grpc.aio.insecure_channel(target) as channel:
        messages: list[bytes] = []
        md = tuple(metadata)
        call: Any
        if shape == "unary":
            call = channel.unary_unary(path(shape))(b"req", metadata=md, timeout=timeout)
        elif shape == "client_stream":
            call = channel.stream_unary(path(shape))(requests(), metadata=md, timeout=timeout)
        elif shape == "server_stream":
            call = channel.unary_stream(path(shape))(b"req", metadata=md, timeout=timeout)
        else:
            call = channel.stream_stream(path(shape))(requests(), metadata=md, timeout=timeout)
        try:
            if shape in ("unary", "client_stream"):
                messages.append(await call)
            else:
                async for message in call:
                    messages.append(message)
        # tuple() first: on grpcio 1.66, dict(aio.Metadata) fails (its keys() yields pairs).
        except grpc.aio.AioRpcError as err:
            return Outcome(messages, err, dict(tuple(err.trailing_metadata() or ())))
        return Outcome(messages, None, dict(tuple(await call.trailing_metadata() or ())))
