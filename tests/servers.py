"""Real gRPC servers on 127.0.0.1 port 0 for tests: sync and asyncio, any generic handlers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc


@contextlib.contextmanager
def sync_server(
    handlers: Sequence[grpc.GenericRpcHandler],
    interceptors: Sequence[Any] = (),
    workers: int = 8,
    options: Sequence[tuple[str, Any]] = (),
) -> Iterator[str]:
    """Start a ``grpc.server`` with ``handlers``; yield its ``127.0.0.1:PORT`` target."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        interceptors=list(interceptors),
        options=list(options),
    )
    server.add_generic_rpc_handlers(tuple(handlers))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(5)


@contextlib.asynccontextmanager
async def aio_server(
    handlers: Sequence[grpc.GenericRpcHandler],
    interceptors: Sequence[Any] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> AsyncIterator[str]:
    """Start a ``grpc.aio.server`` with ``handlers``; yield its ``127.0.0.1:PORT`` target."""
    server = grpc.aio.server(interceptors=list(interceptors), options=list(options))
    server.add_generic_rpc_handlers(tuple(handlers))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)
