"""Brownout: the adaptive concurrency limit against none, on sync and aio servers.

The storm's brownout (the server's capacity halves for the trigger window, callers keep their
rate), served by our own stack (``server_interceptors()``) with and without
``concurrency=ConcurrencyLimit(...)``. The server admits ``slots`` calls at a time (each takes
``service_s``) and queues the rest without bound, like a thread pool or an event loop with a
slow dependency; it does not notice a caller giving up, so without a limit it spends its
halved capacity on answers nobody reads. Callers are an open-loop fleet, one attempt per call
(no retries: the figures are the server's own), each with a deadline of
``attempt_timeout_s``.

Per stack and variant (``limited``, ``unlimited``), one server process runs two loads:

- ``light``: ``capacity / 2`` calls/s, no trigger: refusals (the limiter must refuse none)
  and the unloaded p99 latency;
- ``brownout``: ``rate`` calls/s, capacity halved for ``trigger_s``:
  ``goodput_ratio`` = calls that succeeded within the window per second / the reduced
  capacity (``slots / 2 / service_s``); ``p99_ratio`` = p99 latency of the calls started in
  the window that the server admitted (not refused; a call that ran out of time counts with
  its deadline) / the unloaded p99; ``recovery_s`` = from the end of the window to the start
  of the first bin from which every later bin has at least ``recovered_share`` of its calls
  succeeding.
"""

from __future__ import annotations

import asyncio
import collections
import math
import multiprocessing.connection
import threading
import time
from concurrent import futures
from dataclasses import asdict, dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf import struct_pb2

from benchmarks import payload, procs, stats, variants
from benchmarks.storm_server import Gate

SERVICE = "octollm.bench.v1.Brownout"
WORK_PATH = f"/{SERVICE}/Work"
ARM_PATH = f"/{SERVICE}/Arm"
STACKS = ("sync", "aio")
VARIANTS = ("limited", "unlimited")
_LEAD_S = 0.1


@dataclass(frozen=True)
class BrownoutConfig:
    """The brownout scenario and the limiter's settings (see the module docstring)."""

    rate: float = 120.0
    callers: int = 8
    slots: int = 4
    service_s: float = 0.02
    before_s: float = 1.5
    trigger_s: float = 4.0
    after_s: float = 4.0
    light_s: float = 3.0
    bin_s: float = 0.25
    attempt_timeout_s: float = 0.5
    recovered_share: float = 0.9
    #: The limiter: about twice the calls in flight at the normal peak (4 slots) as the
    #: resting limit, as docs/server.md advises; min and max leave it room both ways.
    min_limit: int = 1
    max_limit: int = 64
    initial_limit: int = 8
    #: Sync server threads: enough that the queue is the gate's, never the thread pool's.
    workers: int = 256

    @property
    def capacity(self) -> float:
        """Calls per second the server serves normally."""
        return self.slots / self.service_s

    @property
    def reduced_capacity(self) -> float:
        """Calls per second it serves during the brownout (half the slots)."""
        return max(1, self.slots // 2) / self.service_s


FULL = BrownoutConfig()
SMOKE = BrownoutConfig(callers=4, before_s=0.3, trigger_s=0.6, after_s=0.6, light_s=0.5,
                       bin_s=0.1)


# -- the server ---------------------------------------------------------------------------------


class _ThreadGate:
    """:class:`benchmarks.storm_server.Gate` for threads, without a queue bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._cond = threading.Condition()

    def enter(self) -> None:
        with self._cond:
            while self.active >= self.limit:
                self._cond.wait()
            self.active += 1

    def leave(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify()

    def set_limit(self, limit: int) -> None:
        with self._cond:
            if limit != self.limit:
                self.limit = limit
                self._cond.notify_all()

    @property
    def idle(self) -> bool:
        return self.active == 0


class _Service:
    """Work (capacity halves in the window) and Arm (sets the window once the server is idle)."""

    def __init__(self, config: BrownoutConfig, gate: Any) -> None:
        self.config = config
        self.gate = gate
        self.window = (math.inf, math.inf)
        self.response = struct_pb2.Value(string_value="done")

    def slots_now(self) -> int:
        start, end = self.window
        in_window = start <= time.monotonic() < end
        return max(1, self.config.slots // 2) if in_window else self.config.slots

    def set_window(self, request: struct_pb2.Value) -> None:
        fields = request.struct_value.fields
        if "start" in fields:
            self.window = (fields["start"].number_value, fields["end"].number_value)
        else:
            self.window = (math.inf, math.inf)

    # sync handlers
    def work(self, request: struct_pb2.Value, context: Any) -> struct_pb2.Value:
        self.gate.set_limit(self.slots_now())
        self.gate.enter()
        try:
            time.sleep(self.config.service_s)
        finally:
            self.gate.leave()
        return self.response

    def arm(self, request: struct_pb2.Value, context: Any) -> struct_pb2.Value:
        for _ in range(1000):  # abandoned work of the last load must not eat into this one
            if self.gate.idle:
                break
            time.sleep(0.01)
        self.set_window(request)
        return self.response

    # aio handlers
    async def work_async(self, request: struct_pb2.Value, context: Any) -> struct_pb2.Value:
        self.gate.set_limit(self.slots_now())
        # Shielded: a call whose caller gave up still takes its slot, as in the sync server.
        await asyncio.shield(asyncio.ensure_future(self._serve()))
        return self.response

    async def _serve(self) -> None:
        await self.gate.enter()
        try:
            await asyncio.sleep(self.config.service_s)
        finally:
            self.gate.leave()

    async def arm_async(self, request: struct_pb2.Value, context: Any) -> struct_pb2.Value:
        for _ in range(1000):
            if self.gate.idle:
                break
            await asyncio.sleep(0.01)
        self.set_window(request)
        return self.response


def _interceptors(stack: str, limited: bool, config: BrownoutConfig) -> list[Any]:
    from prometheus_client import CollectorRegistry

    from octollm_grpc.server import ConcurrencyLimit, ServerMetrics, server_interceptors
    from octollm_grpc.server.aio import server_interceptors as aio_server_interceptors

    concurrency = ConcurrencyLimit(
        min_limit=config.min_limit, max_limit=config.max_limit,
        initial_limit=config.initial_limit, methods={ARM_PATH: None}) if limited else None
    build = server_interceptors if stack == "sync" else aio_server_interceptors
    return list(build(metrics=ServerMetrics(CollectorRegistry()), concurrency=concurrency))


def _handler(work: Any, arm: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Work": grpc.unary_unary_rpc_method_handler(
            work, request_deserializer=payload.deserialize,
            response_serializer=payload.serialize),
        "Arm": grpc.unary_unary_rpc_method_handler(
            arm, request_deserializer=payload.deserialize,
            response_serializer=payload.serialize),
    })


def server_main(stack: str, limited: bool, config: BrownoutConfig,
                conn: multiprocessing.connection.Connection) -> None:
    """Process entry point: the Brownout service on a ``stack`` server with our stack."""
    variants.configure_production_logging()
    if stack == "sync":
        service = _Service(config, _ThreadGate(config.slots))
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.workers),
                             interceptors=_interceptors(stack, limited, config))
        server.add_generic_rpc_handlers((_handler(service.work, service.arm),))
        procs.serve_sync(server, conn)
        return

    async def main() -> None:
        aio_service = _Service(config, Gate(config.slots, queue=1_000_000))
        aio_server = grpc.aio.server(interceptors=_interceptors(stack, limited, config))
        aio_server.add_generic_rpc_handlers(
            (_handler(aio_service.work_async, aio_service.arm_async),))
        await procs.serve_aio(aio_server, conn)

    asyncio.run(main())


# -- the callers --------------------------------------------------------------------------------


async def _fleet(target: str, rate: float, duration: float, window: tuple[float, float] | None,
                 config: BrownoutConfig) -> dict[str, Any]:
    """Open-loop calls at ``rate`` for ``duration`` s; ``window``: the brownout's offsets."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(config.callers)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 10)
        works = [channel.unary_unary(WORK_PATH, request_serializer=payload.serialize,
                                     response_deserializer=payload.deserialize)
                 for channel in channels]
        request = struct_pb2.Value(string_value="work")
        for _ in range(2):  # warm every path
            await asyncio.gather(*(work(request, timeout=5) for work in works),
                                 return_exceptions=True)
        arm = channels[0].unary_unary(ARM_PATH, request_serializer=payload.serialize,
                                      response_deserializer=payload.deserialize)
        await arm(struct_pb2.Value(), timeout=15)  # returns once the server is idle
        t0 = time.monotonic() + _LEAD_S
        schedule = struct_pb2.Value()
        if window is not None:
            schedule.struct_value.update({"start": t0 + window[0], "end": t0 + window[1]})
        await arm(schedule, timeout=15)

        calls: list[tuple[float, float, str]] = []

        async def one(work: Any) -> None:
            start = time.monotonic()
            code = "OK"
            try:
                await work(request, timeout=config.attempt_timeout_s)
            except grpc.RpcError as exc:
                code = exc.code().name
            calls.append((start, time.monotonic(), code))

        pending: set[asyncio.Task[None]] = set()
        max_lag = 0.0
        for i in range(int(duration * rate)):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                max_lag = max(max_lag, -delay)
            task = asyncio.create_task(one(works[i % config.callers]))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        return {"calls": calls, "t0": t0, "max_lag_s": max_lag}
    finally:
        for channel in channels:
            await channel.close()


def fleet_main(target: str, rate: float, duration: float, window: tuple[float, float] | None,
               config: BrownoutConfig) -> dict[str, Any]:
    """Process entry point: one load against ``target``; returns every call."""
    return asyncio.run(_fleet(target, rate, duration, window, config))


# -- the figures --------------------------------------------------------------------------------


def analyse_light(record: dict[str, Any]) -> dict[str, Any]:
    """Refusals, failures and latency of the light load."""
    calls = record["calls"]
    latencies = [end - start for start, end, _ in calls]
    codes = collections.Counter(code for _, _, code in calls)
    return {
        "calls": len(calls),
        "refusals": codes.get("RESOURCE_EXHAUSTED", 0),
        "codes": dict(codes),
        "p50_ms": stats.percentile(latencies, 50) * 1000,
        "p99_ms": stats.percentile(latencies, 99) * 1000,
        "client_max_lag_s": record["max_lag_s"],
    }


def analyse_brownout(record: dict[str, Any], config: BrownoutConfig,
                     unloaded_p99_ms: float) -> dict[str, Any]:
    """Goodput, admitted p99 and recovery of one brownout (see the module docstring)."""
    calls: list[tuple[float, float, str]] = record["calls"]
    t0 = record["t0"]
    start, end = t0 + config.before_s, t0 + config.before_s + config.trigger_s
    stop = end + config.after_s
    in_window = [c for c in calls if start <= c[0] < end]
    goodput = sum(1 for c in calls if c[2] == "OK" and start <= c[1] < end) / config.trigger_s
    admitted = [c[1] - c[0] for c in in_window if c[2] != "RESOURCE_EXHAUSTED"]
    p99_ms = stats.percentile(admitted, 99) * 1000
    bins = []
    edge = end
    while edge < stop - 1e-9:
        outcomes = [c[2] == "OK" for c in calls if edge <= c[0] < edge + config.bin_s]
        bins.append((edge - end, sum(outcomes) / len(outcomes) if outcomes else math.nan))
        edge += config.bin_s
    recovered_at = None
    for index in range(len(bins)):
        later = [share for _, share in bins[index:] if not math.isnan(share)]
        if later and min(later) >= config.recovered_share:
            recovered_at = bins[index][0]
            break
    codes = collections.Counter(c[2] for c in in_window)
    return {
        "calls_in_window": len(in_window),
        "codes_in_window": dict(codes),
        "goodput_per_s": goodput,
        "goodput_ratio": goodput / config.reduced_capacity,
        "admitted_p99_ms": p99_ms,
        "p99_ratio": p99_ms / unloaded_p99_ms,
        "refused_share": codes.get("RESOURCE_EXHAUSTED", 0) / len(in_window)
        if in_window else math.nan,
        "recovered": recovered_at is not None,
        "recovery_s": recovered_at if recovered_at is not None else config.after_s,
        "after_bins": [{"t_s": round(t, 3), "success_share": s} for t, s in bins],
        "client_max_lag_s": record["max_lag_s"],
    }


def run(config: BrownoutConfig) -> dict[str, Any]:
    """``{stack: {variant: {"light": ..., "brownout": ...}}, "config": ...}``."""
    out: dict[str, Any] = {"config": {**asdict(config), "capacity": config.capacity,
                                      "reduced_capacity": config.reduced_capacity}}
    for stack in STACKS:
        out[stack] = {}
        for variant in VARIANTS:
            args = [(stack, variant == "limited", config)]
            with procs.server_processes(server_main, args) as handles:
                target = handles[0].target
                light = analyse_light(procs.run_in_process(
                    fleet_main, target, config.capacity / 2, config.light_s, None, config))
                duration = config.before_s + config.trigger_s + config.after_s
                window = (config.before_s, config.before_s + config.trigger_s)
                record = procs.run_in_process(
                    fleet_main, target, config.rate, duration, window, config)
                brownout = analyse_brownout(record, config, light["p99_ms"])
            out[stack][variant] = {"light": light, "brownout": brownout}
    return out


def headlines(result: dict[str, Any], stack: str) -> dict[str, float]:
    """The stack's brownout keys for latest.json (``*_limited`` and ``*_unlimited``)."""
    out: dict[str, float] = {}
    for variant in VARIANTS:
        entry = result[stack][variant]
        out[f"brownout_goodput_ratio_{variant}"] = entry["brownout"]["goodput_ratio"]
        out[f"brownout_p99_ratio_{variant}"] = entry["brownout"]["p99_ratio"]
        out[f"brownout_recovery_s_{variant}"] = entry["brownout"]["recovery_s"]
        out[f"half_capacity_refusals_{variant}"] = float(entry["light"]["refusals"])
    return out


#: The issue's targets for the limited server: (key, bound, at least).
TARGETS = (
    ("brownout_goodput_ratio_limited", 0.9, True),
    ("brownout_p99_ratio_limited", 3.0, False),
    ("brownout_recovery_s_limited", 1.0, False),
    ("half_capacity_refusals_limited", 0.0, False),
)


def markdown(result: dict[str, Any]) -> list[str]:
    """The brownout table for latest.md."""
    cfg = result["config"]
    lines = [
        "",
        f"Brownout: {cfg['callers']} asyncio callers at {cfg['rate']:.0f} calls/s against our "
        f"server stack with capacity {cfg['capacity']:.0f} calls/s, halved to "
        f"{cfg['reduced_capacity']:.0f} for {cfg['trigger_s']} s (after {cfg['before_s']} s "
        f"normal; {cfg['after_s']} s after); one attempt per call, deadline "
        f"{cfg['attempt_timeout_s']} s. Limited = `concurrency=ConcurrencyLimit(min_limit="
        f"{cfg['min_limit']}, max_limit={cfg['max_limit']}, initial_limit="
        f"{cfg['initial_limit']})`. Unloaded p99 = p99 at half the capacity "
        f"({cfg['light_s']} s, no trigger)."
        + (f" Run on its own (`python -m benchmarks.brownout --merge`), load average (1/5/15 "
           f"min) at start {'/'.join(f'{x:.2f}' for x in result['load_average']['start'])}, at "
           f"end {'/'.join(f'{x:.2f}' for x in result['load_average']['end'])}."
           if result.get("load_average") else ""),
        "",
        "| stack | server | goodput in brownout / reduced capacity | admitted p99 / unloaded "
        "p99 (ms) | refused in brownout | recovery s | refusals at half capacity |",
        "|---|---|---|---|---|---|---|",
    ]
    for stack in STACKS:
        for variant in VARIANTS:
            light = result[stack][variant]["light"]
            b = result[stack][variant]["brownout"]
            lines.append(
                f"| {stack} | {variant} | {b['goodput_ratio']:.2f} ({b['goodput_per_s']:.0f}/s) "
                f"| {b['p99_ratio']:.2f} ({b['admitted_p99_ms']:.0f} / {light['p99_ms']:.0f}) "
                f"| {b['refused_share']:.0%} | {b['recovery_s']:.2f}"
                f"{'' if b['recovered'] else ' (not recovered)'} | {light['refusals']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.brownout [--smoke] [--merge]``: run the brownout alone.

    ``--merge`` puts the figures into ``results/latest.json`` (its ``brownout`` section, the
    stack keys and the targets) and rewrites ``latest.md`` from it, leaving every other figure
    of the last full run as it was; ``make bench`` runs the brownout with the rest.
    """
    import argparse
    import json
    import sys

    from benchmarks import report
    from benchmarks.__main__ import RESULTS, _finite_or_none

    parser = argparse.ArgumentParser(prog="python -m benchmarks.brownout",
                                     description=main.__doc__)
    parser.add_argument("--smoke", action="store_true", help="a fraction of a second per load")
    parser.add_argument("--merge", action="store_true",
                        help="write the figures into results/latest.json and latest.md")
    args = parser.parse_args(argv)
    load_at_start = report.load_average()
    result = run(SMOKE if args.smoke else FULL)
    result["load_average"] = {"start": load_at_start, "end": report.load_average()}
    print("\n".join(markdown(result)))
    for stack in STACKS:
        print(stack, json.dumps(_finite_or_none(headlines(result, stack))))
    print(f"load average at start {load_at_start}, at end {report.load_average()}",
          file=sys.stderr)
    if args.merge:
        path = RESULTS / "latest.json"
        document = json.loads(path.read_text())
        document["brownout"] = result
        for stack in STACKS:
            document[stack].update(headlines(result, stack))
        document["definitions"] = report.DEFINITIONS
        document["targets"] = report.targets(document)
        path.write_text(json.dumps(_finite_or_none(document), indent=1, allow_nan=False) + "\n")
        (RESULTS / "latest.md").write_text(report.markdown(document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
