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
    thread_name_prefix: str = "",
) -> Iterator[str]:
    """Start a ``grpc.server`` with ``handlers``; yield its ``127.0.0.1:PORT`` target.

    ``thread_name_prefix`` names the workers (leak counts tell them apart by it).
    """
    pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name_prefix)
    server = grpc.server(pool, interceptors=list(interceptors), options=list(options))
    server.add_generic_rpc_handlers(tuple(handlers))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(5)
        pool.shutdown(wait=False, cancel_futures=True)


@contextlib.asynccontextmanager
async def aio_server(
    handlers: Sequence[grpc.GenericRpcHandler],
    interceptors: Sequence[Any] = (),
    options: Sequence[tuple[str, Any]] = (),
    migration_pool: futures.Executor | None = None,
) -> AsyncIterator[str]:
    """Start a ``grpc.aio.server`` with ``handlers``; yield its ``127.0.0.1:PORT`` target.

    ``migration_pool`` runs the plain ``def`` handlers (grpc.aio's default pool otherwise).
    """
    server = grpc.aio.server(migration_thread_pool=migration_pool,
                             interceptors=list(interceptors), options=list(options))
    server.add_generic_rpc_handlers(tuple(handlers))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)
