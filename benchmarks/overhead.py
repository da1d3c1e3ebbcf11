"""Overhead against bare grpcio: interleaved windows, paired ratios, median and spread.

One client phase per stack runs in its own process and starts one server process per server
variant (see :mod:`benchmarks.variants`). Each repetition runs every variant of a scenario
back to back, starting at a rotating position (A B C D, B C D A, ...), so slow drifts of the
machine hit all variants alike; a variant's ratio is taken against the bare run of the same
repetition.

Scenarios, at each concurrency (calls in flight):
- ``success``: bare client -> bare / ours / ours_all / peer / floor server; our client -> bare
  server (``client``); a do-nothing client interceptor -> bare server (``client_floor``: what
  any Python client interceptor costs, the floor under ``client``);
- ``error``: bare client -> a handler failing with NOT_FOUND through bare / ours / peer /
  peer_full (the same work as ours, assembled from peers);
- ``reject``: bare client -> a call refused with RESOURCE_EXHAUSTED: by a bare handler's
  ``context.abort`` (bare) or by our rate limiter before any handler runs (ours).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from benchmarks import load, payload, procs, stats, variants
from benchmarks.config import BenchConfig

SUCCESS_VARIANTS = ("bare", "ours", "ours_all", "peer", "floor", "client", "client_floor")
ERROR_VARIANTS = ("bare", "ours", "peer", "peer_full")
REJECT_VARIANTS = ("bare", "ours")
#: Per scenario kind: the method called and the code every call must end with.
KINDS: dict[str, tuple[str, grpc.StatusCode | None]] = {
    "success": (payload.GET_TASK_PATH, None),
    "error": (payload.GET_MISSING_TASK_PATH, grpc.StatusCode.NOT_FOUND),
    "reject": (payload.GET_THROTTLED_TASK_PATH, grpc.StatusCode.RESOURCE_EXHAUSTED),
}
_CALL_TIMEOUT_S = 30.0


def scenarios(config: BenchConfig) -> list[tuple[str, str, int, tuple[str, ...]]]:
    """``(key, kind, concurrency, variants)`` for every scenario of a phase."""
    result: list[tuple[str, str, int, tuple[str, ...]]] = []
    for kind, names in (("success", SUCCESS_VARIANTS), ("error", ERROR_VARIANTS),
                        ("reject", REJECT_VARIANTS)):
        for concurrency in config.concurrencies:
            result.append((f"{kind}_c{concurrency}", kind, concurrency, names))
    return result


def _record(window: load.Window, server_cpu_s: float, client_cpu_s: float) -> dict[str, float]:
    lat = window.latencies_ns
    return {
        "throughput": window.throughput,
        "p50_us": stats.percentile(lat, 50) / 1e3,
        "p99_us": stats.percentile(lat, 99) / 1e3,
        "calls": window.calls,
        "server_cpu_us_per_call": server_cpu_s / window.calls * 1e6,
        "client_cpu_us_per_call": client_cpu_s / window.calls * 1e6,
    }


def _rotated(names: tuple[str, ...], rep: int) -> list[str]:
    shift = rep % len(names)
    return list(names[shift:] + names[:shift])


Raw = dict[str, dict[str, list[dict[str, float]]]]


def run_phase(stack: str, config: BenchConfig) -> Raw:
    """Measure every scenario for ``stack`` ("sync" or "aio"); runs in its own process."""
    # Our client logs retries and breaker changes: as in production, JSON lines (to /dev/null).
    variants.configure_production_logging()
    names = list(dict.fromkeys(_server_name(v) for v in _ALL_VARIANTS))
    arg_sets = [(name, stack) for name in names]
    with procs.server_processes(procs.overhead_server_main, arg_sets) as handles:
        servers = dict(zip(names, handles, strict=True))
        if stack == "sync":
            return _sync_phase(servers, config)
        return asyncio.run(_aio_phase(servers, config))


_ALL_VARIANTS = tuple(dict.fromkeys(SUCCESS_VARIANTS + ERROR_VARIANTS + REJECT_VARIANTS))


def _server_name(variant: str) -> str:
    # Client variants are measured against the bare server: only the client differs.
    return "bare" if variant.startswith("client") else variant


class _PassThrough(grpc.UnaryUnaryClientInterceptor):
    """A client interceptor that does nothing: the cost of the interception machinery."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details, request)


class _AioPassThrough(grpc.aio.UnaryUnaryClientInterceptor):
    """The asyncio twin of :class:`_PassThrough`."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(details, request)


def _server_for(variant: str, servers: dict[str, procs.ServerHandle]) -> procs.ServerHandle:
    return servers[_server_name(variant)]


def _sync_channel(variant: str, target: str) -> grpc.Channel:
    if variant == "client":
        from octollm_grpc.client import resilient_channel

        return resilient_channel(target)
    if variant == "client_floor":
        return grpc.intercept_channel(grpc.insecure_channel(target), _PassThrough())
    return grpc.insecure_channel(target)


def _aio_channel(variant: str, target: str) -> grpc.aio.Channel:
    if variant == "client":
        from octollm_grpc.client.aio import resilient_channel

        return resilient_channel(target)
    if variant == "client_floor":
        return grpc.aio.insecure_channel(target, interceptors=[_AioPassThrough()])
    return grpc.aio.insecure_channel(target)


def _channels_and_calls(
    servers: dict[str, procs.ServerHandle], make_channel: Callable[[str, str], Any]
) -> tuple[list[Any], dict[tuple[str, str], Callable[[], Any]]]:
    """One channel per variant (``make_channel(variant, target)``, sync or aio) and a ready
    call per (kind, variant): ``success`` gets a task, ``error`` asks for a missing one,
    ``reject`` calls the throttled method."""
    request = payload.task_message()
    channels: list[Any] = []
    calls: dict[tuple[str, str], Callable[[], Any]] = {}
    for variant in _ALL_VARIANTS:
        channel = make_channel(variant, _server_for(variant, servers).target)
        channels.append(channel)
        for kind, (path, _code) in KINDS.items():
            method = channel.unary_unary(
                path, request_serializer=payload.serialize,
                response_deserializer=payload.deserialize)
            calls[(kind, variant)] = functools.partial(
                method, request, timeout=_CALL_TIMEOUT_S, metadata=variants.AUTH_METADATA)
    return channels, calls


def _sync_phase(servers: dict[str, procs.ServerHandle], config: BenchConfig) -> Raw:
    channels, calls = _channels_and_calls(servers, _sync_channel)

    raw: Raw = {}
    pool = futures.ThreadPoolExecutor(max_workers=max(config.concurrencies))
    try:
        def measure(kind: str, variant: str, concurrency: int, seconds: float) -> dict[str, float]:
            expect = KINDS[kind][1]
            server = _server_for(variant, servers)
            cpu_before, own_before = server.cpu_seconds(), time.process_time()
            window = load.sync_window(calls[(kind, variant)], concurrency, seconds, pool, expect)
            own = time.process_time() - own_before
            return _record(window, server.cpu_seconds() - cpu_before, own)

        for _key, kind, concurrency, names in scenarios(config):
            for variant in names:
                measure(kind, variant, concurrency, config.warmup_s)
        for rep in range(config.reps):
            for key, kind, concurrency, names in scenarios(config):
                for variant in _rotated(names, rep):
                    record = measure(kind, variant, concurrency, config.window_s)
                    raw.setdefault(key, {}).setdefault(variant, []).append(record)
    finally:
        pool.shutdown()
        for channel in channels:
            channel.close()
    return raw


async def _aio_phase(servers: dict[str, procs.ServerHandle], config: BenchConfig) -> Raw:
    channels, calls = _channels_and_calls(servers, _aio_channel)

    loop = asyncio.get_running_loop()
    raw: Raw = {}

    async def cpu(server: procs.ServerHandle) -> float:
        # The pipe round trip blocks; keep it off the loop the channels live on.
        return await loop.run_in_executor(None, server.cpu_seconds)

    async def measure(
        kind: str, variant: str, concurrency: int, seconds: float
    ) -> dict[str, float]:
        expect = KINDS[kind][1]
        server = _server_for(variant, servers)
        cpu_before, own_before = await cpu(server), time.process_time()
        window = await load.aio_window(calls[(kind, variant)], concurrency, seconds, expect)
        own = time.process_time() - own_before
        return _record(window, await cpu(server) - cpu_before, own)

    try:
        for _key, kind, concurrency, names in scenarios(config):
            for variant in names:
                await measure(kind, variant, concurrency, config.warmup_s)
        for rep in range(config.reps):
            for key, kind, concurrency, names in scenarios(config):
                for variant in _rotated(names, rep):
                    record = await measure(kind, variant, concurrency, config.window_s)
                    raw.setdefault(key, {}).setdefault(variant, []).append(record)
    finally:
        for channel in channels:
            await channel.close()
    return raw


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def summarise(raw: Raw) -> dict[str, Any]:
    """Per scenario and variant: medians of the windows and paired ratios against bare.

    ``throughput_ratio`` is variant / bare throughput (1.0 = free); ``cpu_ratio`` is bare /
    variant CPU per call on the side whose stack differs (the share of bare throughput that
    side keeps when it is the bottleneck);
    ``p50_ratio`` / ``p99_ratio`` are variant / bare latency (1.0 = free). Where the
    scenario has ``peer_full``, ``ours`` also gets ``vs_peer_full_cpu_ratio`` (peer / ours
    server CPU per call: above 1.0, ours is cheaper) and ``vs_peer_full_throughput_ratio``.
    """
    out: dict[str, Any] = {}
    for key, by_variant in raw.items():
        bare = by_variant["bare"]
        scenario: dict[str, Any] = {}
        for variant, records in by_variant.items():
            entry: dict[str, Any] = {
                field: stats.summary([r[field] for r in records])
                for field in ("throughput", "p50_us", "p99_us",
                              "server_cpu_us_per_call", "client_cpu_us_per_call")
            }
            if variant != "bare":
                pairs = list(zip(records, bare, strict=True))
                # The side whose stack differs: the client for "client", else the server.
                side = "client" if variant.startswith("client") else "server"
                cpu_field = f"{side}_cpu_us_per_call"
                entry["throughput_ratio"] = stats.summary(
                    [r["throughput"] / b["throughput"] for r, b in pairs])
                entry["cpu_ratio"] = stats.summary(
                    [_ratio(b[cpu_field], r[cpu_field]) for r, b in pairs])
                entry["p50_ratio"] = stats.summary([r["p50_us"] / b["p50_us"] for r, b in pairs])
                entry["p99_ratio"] = stats.summary([r["p99_us"] / b["p99_us"] for r, b in pairs])
            if variant == "ours" and "peer_full" in by_variant:
                # Against the same work assembled from peers, paired by repetition too.
                peer = list(zip(records, by_variant["peer_full"], strict=True))
                entry["vs_peer_full_cpu_ratio"] = stats.summary(
                    [_ratio(p["server_cpu_us_per_call"], r["server_cpu_us_per_call"])
                     for r, p in peer])
                entry["vs_peer_full_throughput_ratio"] = stats.summary(
                    [r["throughput"] / p["throughput"] for r, p in peer])
            scenario[variant] = entry
        out[key] = scenario
    return out
