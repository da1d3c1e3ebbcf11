"""Separate processes for servers and client phases (spawned, so no forked gRPC state).

A server process binds 127.0.0.1:0, reports ``(port, pid)`` on its pipe, then serves until the
parent sends ``"stop"`` (other messages are handed to the server's own ``on_message``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from benchmarks import variants

_CTX = multiprocessing.get_context("spawn")
SYNC_SERVER_WORKERS = 16
_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServerHandle:
    """A running server process: its target, pid and control pipe."""

    target: str
    pid: int
    conn: multiprocessing.connection.Connection

    def request(self, message: Any) -> Any:
        """Send ``message`` to the server's ``on_message`` and return its answer."""
        self.conn.send(message)
        return self.conn.recv()

    def cpu_seconds(self) -> float:
        """CPU seconds the server process has used so far (user + system, all threads)."""
        return float(self.request("cpu"))


def _answer(message: Any, on_message: Callable[[Any], Any] | None) -> Any:
    if message == "cpu":
        # CPU seconds of the whole server process (all threads), for CPU per call.
        return time.process_time()
    return on_message(message) if on_message else None


def serve_sync(
    server: grpc.Server, conn: multiprocessing.connection.Connection,
    on_message: Callable[[Any], Any] | None = None,
) -> None:
    """Start ``server`` on 127.0.0.1:0, report the port, answer the pipe until ``"stop"``."""
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    conn.send(("ready", port))
    while True:
        message = conn.recv()
        if message == "stop":
            break
        conn.send(_answer(message, on_message))
    server.stop(grace=None).wait(5)
    conn.send("stopped")


async def serve_aio(
    server: grpc.aio.Server, conn: multiprocessing.connection.Connection,
    on_message: Callable[[Any], Any] | None = None,
) -> None:
    """The asyncio twin of :func:`serve_sync` (the pipe is read off the event loop)."""
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    conn.send(("ready", port))
    loop = asyncio.get_running_loop()
    while True:
        message = await loop.run_in_executor(None, conn.recv)
        if message == "stop":
            break
        conn.send(_answer(message, on_message))
    await server.stop(grace=None)
    conn.send("stopped")


def _metrics_of(variant: str) -> Callable[[Any], Any]:
    """Answers ``"metrics"``: the prometheus exposition text of the variant's registry."""
    def answer(message: Any) -> Any:
        if message != "metrics":
            return None
        import prometheus_client

        registry = prometheus_client.REGISTRY
        if variant == "peer_full":
            from benchmarks.peer_stack import REGISTRY as registry
        return prometheus_client.generate_latest(registry).decode()
    return answer


def overhead_server_main(
    variant: str, stack: str, conn: multiprocessing.connection.Connection
) -> None:
    """Process entry point: the Bench service for one variant and stack (the pipe also answers
    ``"metrics"`` with the variant's prometheus exposition text)."""
    handler = variants.handlers(variant, stack)
    chain = list(variants.interceptors(variant, stack))
    if stack == "sync":
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=SYNC_SERVER_WORKERS), interceptors=chain)
        server.add_generic_rpc_handlers((handler,))
        serve_sync(server, conn, _metrics_of(variant))
    else:
        async def main() -> None:
            aio_server = grpc.aio.server(interceptors=chain)
            aio_server.add_generic_rpc_handlers((handler,))
            await serve_aio(aio_server, conn, _metrics_of(variant))
        asyncio.run(main())


@contextmanager
def server_processes(
    entry: Callable[..., None], arg_sets: list[tuple[Any, ...]]
) -> Iterator[list[ServerHandle]]:
    """Start one process per ``arg_sets`` item running ``entry(*args, conn)``, all in parallel."""
    started: list[tuple[Any, multiprocessing.connection.Connection]] = []
    handles: list[ServerHandle] = []
    try:
        for args in arg_sets:
            parent, child = _CTX.Pipe()
            process = _CTX.Process(target=entry, args=(*args, child), daemon=True)
            process.start()
            started.append((process, parent))
        for process, parent in started:
            if not parent.poll(_START_TIMEOUT_S):
                raise RuntimeError(f"server process {process.pid} did not start")
            try:
                tag, port = parent.recv()
            except EOFError:
                process.join(5)
                raise RuntimeError(f"server process {process.pid} exited at start "
                                   f"(exit code {process.exitcode}); see its stderr") from None
            assert tag == "ready", tag
            handles.append(ServerHandle(f"127.0.0.1:{port}", process.pid, parent))
        yield handles
    finally:
        for process, parent in started:
            try:
                parent.send("stop")
                if parent.poll(10):
                    parent.recv()
            except (OSError, EOFError):
                pass
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)


def _trampoline(
    fn: Callable[..., Any], args: tuple[Any, ...], conn: multiprocessing.connection.Connection
) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def run_in_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh spawned process (its own gRPC state); return its result.

    The process is not a daemon, so ``fn`` may start server processes of its own.
    """
    parent, child = _CTX.Pipe()
    process = _CTX.Process(target=_trampoline, args=(fn, args, child))
    process.start()
    try:
        status, value = parent.recv()
    finally:
        process.join()
    if status != "ok":
        raise RuntimeError(f"{fn.__name__} failed in its process:\n{value}")
    return value
