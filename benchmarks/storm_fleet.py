"""The storm's callers: a fleet of asyncio clients at a fixed total rate (open loop).

Call ``i`` starts at ``t0 + i / rate`` on caller ``i % callers`` (one channel per caller),
whether or not earlier calls have finished, as independent users would. Each call sends its
start time in metadata so the server can count the attempts of every logical call.

Client kinds:
- ``none``: one attempt per call;
- ``naive``: the seed's ``retry_with_backoff`` around the call (delays scaled like the trigger);
- ``ours``: ``resilient_channel`` (retry, budget, breaker) with the same attempt count,
  backoff and retried codes (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``), and a breaker reset
  timeout of ``breaker_reset_s``.

Every attempt has the deadline ``attempt_timeout_s``.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import struct_pb2

from benchmarks import payload, variants
from benchmarks.config import StormConfig
from benchmarks.naive_retry import retry_with_backoff
from benchmarks.storm_server import ARM_PATH

KINDS = ("none", "naive", "ours")
#: Time between arming the trigger and the first call (channels are already connected).
_LEAD_S = 0.1
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

Metadata = tuple[tuple[str, str], ...]
#: One logical call (with every retry its client kind makes), given the call's metadata.
Invoke = Callable[[Metadata], Awaitable[Any]]


def ours_channel(target: str, config: StormConfig) -> grpc.aio.Channel:
    """Our resilient channel, configured like the naive baseline (attempts, backoff)."""
    from octollm_grpc.client import BreakerSettings, RetryPolicy
    from octollm_grpc.client.aio import resilient_channel

    policy = RetryPolicy(
        max_attempts=config.max_attempts,
        initial_backoff=1.0 * config.scale,
        max_backoff=60.0 * config.scale,
        backoff_multiplier=2.0,
        # What the naive client retries too: failures and attempts that ran out of time.
        retryable_codes=frozenset({grpc.StatusCode.UNAVAILABLE,
                                   grpc.StatusCode.DEADLINE_EXCEEDED}),
        per_attempt_timeout=config.attempt_timeout_s,
    )
    # The budget is the default one (A6: 10 tokens, ratio 0.1), shared by the fleet's channels.
    return resilient_channel(
        target, retry=policy, breaker=BreakerSettings(reset_timeout=config.breaker_reset_s))


def _invoker(kind: str, method: Any, config: StormConfig) -> Invoke:
    request = struct_pb2.Value(string_value="work")
    timeout = config.attempt_timeout_s
    if kind == "none":
        async def once(metadata: Metadata) -> Any:
            return await method(request, timeout=timeout, metadata=metadata)
        return once
    if kind == "ours":
        async def resilient(metadata: Metadata) -> Any:
            # The call's deadline covers every attempt; each attempt gets attempt_timeout_s.
            return await method(request, timeout=config.call_timeout_s, metadata=metadata)
        return resilient
    if kind == "naive":
        async def naive(metadata: Metadata) -> Any:
            return await retry_with_backoff(
                lambda: method(request, timeout=timeout, metadata=metadata),
                max_retries=config.max_attempts - 1,
                base_delay=1.0 * config.scale,
                max_delay=60.0 * config.scale,
                retry_on=(grpc.RpcError,),
            )
        return naive
    raise ValueError(f"unknown client kind {kind!r}")


async def _fleet(kind: str, target: str, mode: str, config: StormConfig) -> dict[str, Any]:
    channels = [
        ours_channel(target, config) if kind == "ours" else grpc.aio.insecure_channel(target)
        for _ in range(config.callers)
    ]
    control = grpc.aio.insecure_channel(target)
    try:
        for channel in [*channels, control]:
            await asyncio.wait_for(channel.channel_ready(), 10)
        invokers = [
            _invoker(kind, channel.unary_unary(
                payload.WORK_PATH, request_serializer=payload.serialize,
                response_deserializer=payload.deserialize), config)
            for channel in channels
        ]
        # Warm every call path first (arming the trigger clears the server's record), so the
        # schedule does not start with a burst of calls delayed by cold code.
        for _ in range(2):
            await asyncio.gather(*(invoke(()) for invoke in invokers),
                                 return_exceptions=True)
        arm = control.unary_unary(ARM_PATH, request_serializer=payload.serialize,
                                  response_deserializer=payload.deserialize)
        # An empty schedule first: it returns once the server is idle, then the clock starts.
        await arm(struct_pb2.Value(), timeout=10)
        t0 = time.monotonic() + _LEAD_S
        trigger_start = t0 + config.before_s
        trigger_end = trigger_start + config.trigger_s
        end = trigger_end + config.after_s
        schedule = struct_pb2.Value()
        schedule.struct_value.update({"start": trigger_start, "end": trigger_end, "mode": mode})
        await arm(schedule, timeout=10)

        calls: list[tuple[float, float, bool]] = []
        failures: collections.Counter[str] = collections.Counter()

        async def one_call(invoke: Invoke) -> None:
            start = time.monotonic()
            ok = True
            try:
                await invoke(((payload.CALL_START_KEY, repr(start)),))
            except grpc.RpcError as exc:
                ok = False
                # Grouped by reason: numbers (ports, delays) are masked.
                failures[_NUMBER.sub("#", f"{exc.code().name}: {exc.details()}")[:100]] += 1
            calls.append((start, time.monotonic(), ok))

        pending: set[asyncio.Task[None]] = set()
        total = int((end - t0) * config.rate)
        max_lag = 0.0
        for i in range(total):
            delay = t0 + i / config.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                # Behind schedule (a starved client): the call still starts, in a burst.
                max_lag = max(max_lag, -delay)
            task = asyncio.create_task(one_call(invokers[i % config.callers]))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        return {"calls": calls, "t0": t0, "trigger_start": trigger_start,
                "trigger_end": trigger_end, "end": end, "max_lag_s": max_lag,
                "failures": dict(failures)}
    finally:
        for channel in [*channels, control]:
            await channel.close()


def run_fleet(kind: str, target: str, mode: str, config: StormConfig) -> dict[str, Any]:
    """Process entry point: run one storm with client ``kind``; return calls and schedule."""
    variants.configure_production_logging()
    return asyncio.run(_fleet(kind, target, mode, config))
