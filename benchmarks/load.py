"""Closed-loop load: ``concurrency`` callers each repeat one call until a window ends.

Throughput is completed calls over the time from the common start to the last caller's
finish (no call is cut off, none is counted twice). Every call's latency is kept for the
percentiles. An unexpected outcome (an error on the success path, the wrong code on the error
path) fails the benchmark instead of skewing it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True)
class Window:
    """One measured window: calls completed, elapsed seconds, per-call latencies (ns)."""

    calls: int
    elapsed_s: float
    latencies_ns: list[int]

    @property
    def throughput(self) -> float:
        """Completed calls per second."""
        return self.calls / self.elapsed_s


def _check(expect_code: grpc.StatusCode | None, error: grpc.RpcError | None) -> None:
    code = None if error is None else error.code()
    if code != expect_code:
        raise AssertionError(f"expected {expect_code}, got {code}: {error!r}")


def sync_window(
    call: Callable[[], Any], concurrency: int, duration_s: float,
    pool: futures.ThreadPoolExecutor, expect_code: grpc.StatusCode | None,
) -> Window:
    """Run ``call`` from ``concurrency`` threads of ``pool`` for ``duration_s`` seconds."""
    barrier = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker() -> tuple[list[int], float]:
        latencies: list[int] = []
        clock = time.perf_counter_ns
        barrier.wait()
        end = deadline[0]
        while True:
            start = clock()
            error = None
            try:
                call()
            except grpc.RpcError as exc:
                error = exc
            latencies.append(clock() - start)
            if error is not None or expect_code is not None:
                _check(expect_code, error)
            if time.perf_counter() >= end:
                return latencies, time.perf_counter()

    jobs = [pool.submit(worker) for _ in range(concurrency)]
    started = time.perf_counter()
    deadline[0] = started + duration_s
    barrier.wait()
    results = [job.result() for job in jobs]
    finished = max(done for _, done in results)
    latencies = [lat for lats, _ in results for lat in lats]
    return Window(len(latencies), finished - started, latencies)


async def aio_window(
    call: Callable[[], Awaitable[Any]], concurrency: int, duration_s: float,
    expect_code: grpc.StatusCode | None,
) -> Window:
    """Run ``call`` from ``concurrency`` tasks for ``duration_s`` seconds."""
    clock = time.perf_counter_ns
    started = time.perf_counter()
    end = started + duration_s

    async def worker() -> list[int]:
        latencies: list[int] = []
        while True:
            start = clock()
            error = None
            try:
                await call()
            except grpc.RpcError as exc:
                error = exc
            latencies.append(clock() - start)
            if error is not None or expect_code is not None:
                _check(expect_code, error)
            if time.perf_counter() >= end:
                return latencies

    results = await asyncio.gather(*(worker() for _ in range(concurrency)))
    finished = time.perf_counter()
    latencies = [lat for lats in results for lat in lats]
    return Window(len(latencies), finished - started, latencies)
