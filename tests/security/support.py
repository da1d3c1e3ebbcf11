"""TLS servers on 127.0.0.1 port 0 (sync and aio) with a tiny echo service, for the TLS tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc

from octollm_grpc import errors as e
from octollm_grpc.server._identity import certificate_principal

__all__ = ["ECHO", "WHO", "aio_tls_server", "handlers", "sync_tls_server"]

ECHO = "/sec.Echo/Echo"
WHO = "/sec.Echo/Who"


def _echo(request: bytes, context: Any) -> bytes:
    if request == b"missing":
        raise e.TaskNotFoundError("t-404")
    return b"echo:" + request


def _who(request: bytes, context: Any) -> bytes:
    return (certificate_principal(context) or "-").encode()


async def _echo_async(request: bytes, context: Any) -> bytes:
    return _echo(request, context)


async def _who_async(request: bytes, context: Any) -> bytes:
    return _who(request, context)


def handlers(aio: bool) -> tuple[grpc.GenericRpcHandler, ...]:
    """``sec.Echo``: ``Echo`` answers ``echo:<request>`` (``missing`` raises
    ``TaskNotFoundError``); ``Who`` answers the caller's certificate principal or ``-``."""
    echo, who = (_echo_async, _who_async) if aio else (_echo, _who)
    return (grpc.method_handlers_generic_handler("sec.Echo", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Who": grpc.unary_unary_rpc_method_handler(who),
    }),)


@contextlib.contextmanager
def sync_tls_server(credentials: grpc.ServerCredentials,
                    interceptors: Sequence[Any] = ()) -> Iterator[int]:
    """A ``grpc.server`` on a TLS port; yields the port."""
    pool = futures.ThreadPoolExecutor(max_workers=8)
    server = grpc.server(pool, interceptors=list(interceptors),
                         options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(handlers(aio=False))
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None).wait(5)
        pool.shutdown(wait=False, cancel_futures=True)


@contextlib.asynccontextmanager
async def aio_tls_server(credentials: grpc.ServerCredentials,
                         interceptors: Sequence[Any] = ()) -> AsyncIterator[int]:
    """A ``grpc.aio.server`` on a TLS port; yields the port."""
    server = grpc.aio.server(interceptors=list(interceptors),
                             options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(handlers(aio=True))
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(grace=None)
