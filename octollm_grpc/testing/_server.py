"""``serve``: a real server with the octollm stack on a free loopback port, for one test."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent import futures
from typing import Any, Literal, overload

import grpc
import grpc.aio

from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors

__all__ = ["serve", "serve_aio_in_thread", "servicer_handlers"]

_HOST = "127.0.0.1"
# grpcio sets SO_REUSEPORT by default: a port taken by another server would be shared silently.
_OPTIONS: tuple[tuple[str, Any], ...] = (("grpc.so_reuseport", 0),)


@overload
def serve(
    *generic_handlers: grpc.GenericRpcHandler,
    interceptors: Sequence[Any] | None = None,
    aio: Literal[False] = False,
    stack: Sequence[Any] | None = None,
    options: Sequence[tuple[str, Any]] = (),
    grace: float = 1.0,
    max_workers: int = 16,
) -> contextlib.AbstractContextManager[str]: ...


@overload
def serve(
    *generic_handlers: grpc.GenericRpcHandler,
    interceptors: Sequence[Any] | None = None,
    aio: Literal[True],
    stack: Sequence[Any] | None = None,
    options: Sequence[tuple[str, Any]] = (),
    grace: float = 1.0,
    max_workers: int = 16,
) -> contextlib.AbstractAsyncContextManager[str]: ...


def serve(
    *generic_handlers: grpc.GenericRpcHandler,
    interceptors: Sequence[Any] | None = None,
    aio: bool = False,
    stack: Sequence[Any] | None = None,
    options: Sequence[tuple[str, Any]] = (),
    grace: float = 1.0,
    max_workers: int = 16,
) -> contextlib.AbstractContextManager[str] | contextlib.AbstractAsyncContextManager[str]:
    """Start a real server with ``generic_handlers`` on a free ``127.0.0.1`` port.

    ``with serve(handler) as target:`` (or ``async with serve(handler, aio=True)``, which must
    be entered in the event loop the server is to run on) yields the ``"127.0.0.1:PORT"``
    target to dial. The server runs ``stack`` (default: ``server_interceptors()`` of the
    chosen stack, i.e. error mapping, request ids, logging and metrics), then
    ``interceptors`` (innermost, e.g. a [`FaultInjector`][octollm_grpc.testing.FaultInjector]).
    ``options`` are added to the server's gRPC options. On exit the server stops: calls in
    flight get ``grace`` seconds to finish, then are cancelled; exit never waits longer than
    ``grace`` plus a few seconds. ``max_workers`` sizes the sync server's thread pool.

    Args:
        *generic_handlers: The handlers served.
        interceptors: Interceptors after the octollm stack.
        aio: A ``grpc.aio`` server (use ``async with``).
        stack: The octollm stack (default: ``server_interceptors()``).
        options: Server options.
        grace: Seconds given to calls in flight at the end.
        max_workers: The sync server's thread pool size.

    Returns:
        A context manager yielding the ``127.0.0.1:PORT`` target.
    """
    chain = [*(_default_stack(aio) if stack is None else stack), *(interceptors or ())]
    server_options = [*_OPTIONS, *options]
    if aio:
        return _serve_aio(generic_handlers, chain, server_options, grace)
    return _serve_sync(generic_handlers, chain, server_options, grace, max_workers)


class _HandlerCollector:
    """Stands in for a server when generated ``add_*Servicer_to_server`` code registers."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        # The same methods as the generic handler added alongside; only a dispatch shortcut.
        pass


def servicer_handlers(
    add_to_server: Callable[[Any, Any], object], servicer: Any
) -> list[grpc.GenericRpcHandler]:
    """The generic handlers generated code would register for ``servicer``, for
    [`serve`][octollm_grpc.testing.serve].

    ``servicer_handlers(tasks_pb2_grpc.add_TaskServiceServicer_to_server, MyServicer())``.

    Args:
        add_to_server: The generated ``add_*Servicer_to_server`` function.
        servicer: Your servicer instance.

    Returns:
        The generic handlers for [`serve`][octollm_grpc.testing.serve].
    """
    collector = _HandlerCollector()
    add_to_server(servicer, collector)
    if not collector.handlers:
        raise ValueError(f"{add_to_server!r} registered no generic handlers")
    return collector.handlers


def _bound(port: int) -> int:
    if port == 0:  # some grpcio versions report a failed bind as port 0 instead of raising
        raise RuntimeError(f"could not bind a port on {_HOST}")
    return port


def _default_stack(aio: bool) -> list[Any]:
    return list(server_aio.server_interceptors() if aio else server_interceptors())


@contextlib.contextmanager
def _serve_sync(
    handlers: Sequence[grpc.GenericRpcHandler],
    interceptors: list[Any],
    options: list[tuple[str, Any]],
    grace: float,
    max_workers: int,
) -> Iterator[str]:
    pool = futures.ThreadPoolExecutor(max_workers=max_workers,
                                      thread_name_prefix="octollm-testing")
    server = grpc.server(pool, interceptors=interceptors, options=options)
    try:
        server.add_generic_rpc_handlers(tuple(handlers))
        port = _bound(server.add_insecure_port(f"{_HOST}:0"))
        server.start()
        yield f"{_HOST}:{port}"
    finally:
        server.stop(grace).wait(grace + 5)
        pool.shutdown(wait=False, cancel_futures=True)


@contextlib.asynccontextmanager
async def _serve_aio(
    handlers: Sequence[grpc.GenericRpcHandler],
    interceptors: list[Any],
    options: list[tuple[str, Any]],
    grace: float,
) -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=interceptors, options=options)
    try:
        server.add_generic_rpc_handlers(tuple(handlers))
        port = _bound(server.add_insecure_port(f"{_HOST}:0"))
        await server.start()
        yield f"{_HOST}:{port}"
    finally:
        await server.stop(grace)


@contextlib.contextmanager
def serve_aio_in_thread(
    *generic_handlers: grpc.GenericRpcHandler,
    interceptors: Sequence[Any] | None = None,
    stack: Sequence[Any] | None = None,
    options: Sequence[tuple[str, Any]] = (),
    grace: float = 1.0,
    start_timeout: float = 30.0,
) -> Iterator[str]:
    """[`serve`][octollm_grpc.testing.serve] with ``aio=True``, run on an event loop of its own in a
    new thread.

    A plain ``with`` block, so it suits sync tests and fixtures, and async tests whatever
    runs their loop (the server never shares it). Handlers and interceptors run on the
    server's loop: they must not use loop-bound objects (``asyncio.Event``...) of the test's.

    Args:
        *generic_handlers: The handlers served.
        interceptors: Interceptors after the octollm stack.
        stack: The octollm stack, as for [`serve`][octollm_grpc.testing.serve].
        options: Server options.
        grace: Seconds given to calls in flight at the end.
        start_timeout: Seconds to wait for the server to start.

    Yields:
        The ``127.0.0.1:PORT`` target.
    """
    started: futures.Future[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]] = (
        futures.Future())

    async def run() -> None:
        stop = asyncio.Event()
        try:
            async with serve(*generic_handlers, interceptors=interceptors, aio=True,
                             stack=stack, options=options, grace=grace) as target:
                started.set_result((target, asyncio.get_running_loop(), stop))
                await stop.wait()
        except BaseException as exc:
            if started.done():
                raise
            started.set_exception(exc)  # the failure to start is raised in the caller's thread

    thread = threading.Thread(target=asyncio.run, args=(run(),), name="octollm-testing-aio",
                              daemon=True)
    thread.start()
    try:
        target, loop, stop = started.result(start_timeout)
    except BaseException:
        # Failed to start: let the loop thread finish before the caller sees the error, so
        # no thread of this server outlives the with statement (a start still running after
        # start_timeout is not waited for again).
        if started.done():
            thread.join(start_timeout)
        raise
    try:
        yield target
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(grace + 10)
