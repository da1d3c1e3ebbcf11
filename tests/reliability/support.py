"""Shared tools of the reliability suite: services in subprocesses, probes, counters, scrapes.

Services run as real processes (``python -m server``, or :mod:`tests.reliability.faulty_service`
for injected internal failures) on ports they pick themselves (``--port 0``) and report on
stdout, as :mod:`tests.service.harness` does; :func:`launch` adds what the harness cannot:
another entry module, a fixed port for a restart on the same address, and SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import socket
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.gen.octollm.tasks.v1 import tasks_pb2_grpc
from tests import servers
from tests.service.harness import SERVICE, RunningService, launch, stop

__all__ = [
    "SERVICE",
    "Settle",
    "closed_port",
    "db_rows",
    "health_ok",
    "launch",
    "proc_status",
    "scrape",
    "service",
    "stop",
    "sync_server",
    "task_stub",
    "wait_until",
    "warm_up_aio",
]

#: Name prefix of the worker threads of :func:`sync_server`'s servers.
SERVER_THREADS = "reliability-server"


@contextlib.contextmanager
def service(tmp_path: Path, *flags: str, **kwargs: Any) -> Iterator[RunningService]:
    """:func:`launch` (any module, any readiness) as a context manager (SIGTERM after)."""
    running = launch(tmp_path, *flags, **kwargs)
    try:
        yield running
    finally:
        stop(running)


@contextlib.contextmanager
def sync_server(handlers: list[grpc.GenericRpcHandler], interceptors: list[Any] | None = None,
                workers: int = 16) -> Iterator[str]:
    """A ``grpc.server`` on 127.0.0.1:0 whose workers are named :data:`SERVER_THREADS`,
    so leak counts can tell them apart."""
    with servers.sync_server(handlers, interceptors or (), workers=workers,
                             thread_name_prefix=SERVER_THREADS) as target:
        yield target


def task_stub(channel: grpc.Channel) -> tasks_pb2_grpc.TaskServiceStub:
    """A ``TaskService`` stub (the generated module has no type stubs)."""
    return tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]


def health_ok(target: str, timeout: float = 5.0) -> bool:
    """Whether the task service's health check answers SERVING on a fresh plain channel."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
        answer = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=timeout)
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def db_rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` from the service's SQLite file (WAL: readable while it runs)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return list(conn.execute(sql, args))


_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text endpoint as ``(name, labels, value)``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        samples.append((match["name"], labels, float(match["value"])))
    return samples


def metric(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for n, ls, v in samples
               if n == name and all(ls.get(k) == want for k, want in labels.items()))


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` (kB) and ``Threads`` of a process, from ``/proc/PID/status``."""
    wanted: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                wanted[key] = int(value.split()[0])
    return wanted


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(step)


def warm_up_aio() -> None:
    """Start grpc.aio's process-wide poller thread (once per process) before a baseline."""
    async def touch() -> None:
        async with grpc.aio.insecure_channel("127.0.0.1:1"):
            pass
    asyncio.run(touch())


class Settle:
    """Thread and asyncio-task counts before an attack, compared after it settled.

    Taken after a warm-up call, so grpcio's process-wide threads (started once) are in the
    baseline; ``leaked_*()`` poll for up to ``timeout`` seconds before reporting a difference.
    Threads named with the ``ignore`` prefix (a test server's own worker pool) do not count.
    """

    def __init__(self, ignore: str = SERVER_THREADS) -> None:
        self.ignore = ignore
        self.threads = {t.ident for t in threading.enumerate()}
        self.tasks = self._tasks()

    @staticmethod
    def _tasks() -> int:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return 0
        return sum(1 for t in asyncio.all_tasks(loop) if not t.done())

    def _new_threads(self) -> list[str]:
        return [t.name for t in threading.enumerate()
                if t.ident not in self.threads and not t.name.startswith(self.ignore)]

    def leaked_threads(self, timeout: float = 5.0) -> list[str]:
        """Threads alive now that were not before (after up to ``timeout`` s of settling)."""
        gc.collect()
        wait_until(lambda: not self._new_threads(), timeout, step=0.05)
        return self._new_threads()

    async def leaked_tasks(self, timeout: float = 5.0) -> int:
        """How many more asyncio tasks are pending than before (after settling)."""
        deadline = time.monotonic() + timeout
        while self._tasks() > self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self._tasks() - self.tasks
