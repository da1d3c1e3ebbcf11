"""What a shared (Redis) rate limit adds per call, next to the local one (``make bench-redis``).

Two measurements per stack (sync ``grpc.server`` with redis-py's client, ``grpc.aio`` with its
asyncio client), each against a real ``redis-server`` on loopback started here:

- ``decision``: one ``take`` on the store, alone (the only work the limiter adds to a call);
- ``call``: one unary call through a real server on 127.0.0.1 (client in this process,
  sequential), with no limiter, the local limiter and the Redis one, in interleaved rounds;
  "added" is the difference of the percentiles to the no-limiter server.

Limits are set high enough that nothing is rejected: this measures the admitted path.
``--smoke`` runs a few hundred iterations (for CI); the full run writes a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from benchmarks.stats import percentile
from octollm_grpc.server import RateLimit, RateLimiter, server_interceptors
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server._ratelimit import MemoryStore
from octollm_grpc.server.ratelimit_redis import RedisStore
from tests.redis.server import RedisServer

METHOD = "/bench.Limit/Unary"
OPEN = RateLimit(limit=10**9)  # never rejects: the admitted path is what is measured
ROUNDS = 10
#: Generous on purpose: the figures are Redis's latency, not the fallback's (a busy host can
#: exceed the 50 ms default now and then; each such decision would be made locally).
TIMEOUT = 1.0
ERRORS = "octollm_ratelimit_store_errors_total"


def _percentiles(samples: list[float]) -> dict[str, float]:
    return {"p50_us": percentile(samples, 50) * 1e6, "p99_us": percentile(samples, 99) * 1e6}


def _handlers_sync() -> grpc.GenericRpcHandler:
    def unary(request: bytes, context: Any) -> bytes:
        return request

    return grpc.method_handlers_generic_handler(
        "bench.Limit", {"Unary": grpc.unary_unary_rpc_method_handler(unary)})


def _handlers_aio() -> grpc.GenericRpcHandler:
    async def unary(request: bytes, context: Any) -> bytes:
        return request

    return grpc.method_handlers_generic_handler(
        "bench.Limit", {"Unary": grpc.unary_unary_rpc_method_handler(unary)})


def _limiter(store: Any) -> RateLimiter | None:
    return None if store is None else RateLimiter(OPEN, store=store)


@contextlib.contextmanager
def _sync_target(store: Any) -> Iterator[str]:
    pool = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(pool, interceptors=server_interceptors(
        metrics=False, logger=False, rate_limit=_limiter(store)))
    server.add_generic_rpc_handlers((_handlers_sync(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait(5)
        pool.shutdown(wait=False)


def _time_sync(n: int, step: Callable[[], Any]) -> list[float]:
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        started = clock()
        step()
        samples.append(clock() - started)
    return samples


async def _time_aio(n: int, step: Callable[[], Any]) -> list[float]:
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        started = clock()
        await step()
        samples.append(clock() - started)
    return samples


def run_sync(url: str, n: int) -> dict[str, Any]:
    """Decision and call percentiles on the sync stack."""
    out: dict[str, Any] = {}
    registry = CollectorRegistry()
    redis_store = RedisStore(url, timeout=TIMEOUT, registry=registry)
    redis_store.connect()
    stores: dict[str, Any] = {"none": None, "local": MemoryStore(), "redis": redis_store}
    try:
        for name in ("local", "redis"):
            store = stores[name]
            _time_sync(n // 10, lambda s=store: s.take("", "caller", OPEN))  # warm up
            out[f"decision_{name}"] = _percentiles(
                _time_sync(n, lambda s=store: s.take("", "caller", OPEN)))
        with contextlib.ExitStack() as running:
            calls = {}
            for name, store in stores.items():
                target = running.enter_context(_sync_target(store))
                channel = running.enter_context(grpc.insecure_channel(target))
                calls[name] = channel.unary_unary(METHOD)
                _time_sync(n // 10, lambda c=calls[name]: c(b"x", timeout=5))
            samples: dict[str, list[float]] = {name: [] for name in calls}
            # Interleaved rounds: a load change on the host hits the three variants alike.
            for _ in range(ROUNDS):
                for name, call in calls.items():
                    samples[name] += _time_sync(n // ROUNDS, lambda c=call: c(b"x", timeout=5))
            for name, values in samples.items():
                out[f"call_{name}"] = _percentiles(values)
    finally:
        redis_store.close()
    out["store_errors"] = registry.get_sample_value(ERRORS) or 0.0
    return out


async def run_aio(url: str, n: int) -> dict[str, Any]:
    """Decision and call percentiles on the aio stack."""
    out: dict[str, Any] = {}
    registry = CollectorRegistry()
    redis_store = RedisStore(url, timeout=TIMEOUT, registry=registry)
    await redis_store.connect_async()
    stores: dict[str, Any] = {"none": None, "local": MemoryStore(), "redis": redis_store}
    try:
        for name in ("local", "redis"):
            store = stores[name]
            await _time_aio(n // 10, lambda s=store: s.take_async("", "caller", OPEN))
            out[f"decision_{name}"] = _percentiles(
                await _time_aio(n, lambda s=store: s.take_async("", "caller", OPEN)))
        async with contextlib.AsyncExitStack() as running:
            calls = {}
            for name, store in stores.items():
                server = grpc.aio.server(interceptors=server_aio.server_interceptors(
                    metrics=False, logger=False, rate_limit=_limiter(store)))
                server.add_generic_rpc_handlers((_handlers_aio(),))
                port = server.add_insecure_port("127.0.0.1:0")
                await server.start()
                running.push_async_callback(server.stop, None)
                channel = await running.enter_async_context(
                    grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
                calls[name] = channel.unary_unary(METHOD)
                await _time_aio(n // 10, lambda c=calls[name]: c(b"x", timeout=5))
            samples: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(ROUNDS):
                for name, call in calls.items():
                    samples[name] += await _time_aio(
                        n // ROUNDS, lambda c=call: c(b"x", timeout=5))
            for name, values in samples.items():
                out[f"call_{name}"] = _percentiles(values)
    finally:
        await redis_store.aclose()
    out["store_errors"] = registry.get_sample_value(ERRORS) or 0.0
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    """The results as the markdown table docs/redis.md shows."""
    lines = [
        "| stack | measure | local p50 | local p99 | Redis p50 | Redis p99 |",
        "|---|---|---|---|---|---|",
    ]
    for stack, figures in results.items():
        lines.append(
            f"| {stack} | one decision (store alone) "
            f"| {figures['decision_local']['p50_us']:.1f} µs "
            f"| {figures['decision_local']['p99_us']:.1f} µs "
            f"| {figures['decision_redis']['p50_us']:.1f} µs "
            f"| {figures['decision_redis']['p99_us']:.1f} µs |")
        base = figures["call_none"]
        added = {name: {q: figures[f"call_{name}"][q] - base[q] for q in ("p50_us", "p99_us")}
                 for name in ("local", "redis")}
        lines.append(
            f"| {stack} | added to a unary call (vs no limiter: "
            f"p50 {base['p50_us']:.0f} µs, p99 {base['p99_us']:.0f} µs) "
            f"| {added['local']['p50_us']:+.0f} µs | {added['local']['p99_us']:+.0f} µs "
            f"| {added['redis']['p50_us']:+.0f} µs | {added['redis']['p99_us']:+.0f} µs |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Start a redis-server, measure both stacks, print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ratelimit_redis")
    parser.add_argument("--smoke", action="store_true", help="a few hundred iterations only")
    parser.add_argument("-n", type=int, default=None, help="iterations per measurement")
    args = parser.parse_args(argv)
    n = args.n or (300 if args.smoke else 5000)
    with tempfile.TemporaryDirectory() as workdir:
        redis_server = RedisServer(Path(workdir))
        redis_server.start()
        try:
            results = {"sync": run_sync(redis_server.url, n),
                       "aio": asyncio.run(run_aio(redis_server.url, n))}
        finally:
            redis_server.stop()
    errors = {stack: int(figures["store_errors"]) for stack, figures in results.items()}
    print(f"{n} iterations per measurement, sequential, loopback Redis; "
          f"decisions Redis failed (made locally instead): {errors}")
    print(table(results))


if __name__ == "__main__":
    main()
