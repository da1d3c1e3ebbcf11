"""A benchmark client for instruction counting.

``python -m benchmarks.ir_client STACK VARIANT TARGET N WARMUP``, run under valgrind's callgrind
by :mod:`benchmarks.instructions`: makes ``WARMUP`` successful GetTask calls to ``TARGET`` one
at a time through the ``VARIANT`` channel (``bare``: a plain channel; ``client``:
``resilient_channel``; ``client_floor``: a do-nothing client interceptor; ``client_floor2``: two
of them, what one more interceptor layer costs; ``bare_no_grpc_retries`` and
``client_floor_no_grpc_retries``: those on a channel with ``resilient_channel``'s
``grpc.enable_retries=0``; ``client_floor_await``: the latter awaiting the call inside the
interceptor, as a retrying layer must; the ``variants.CLIENT_ABLATIONS``:
``resilient_channel`` with parts switched off) on ``STACK`` (``sync`` or ``aio``), prints
``ready`` and waits for a line on stdin (the driver switches counting on), makes ``N`` more
calls, prints ``done`` and waits for stdin to close (the driver dumps).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from benchmarks import overhead, payload, variants

_TIMEOUT_S = 60.0


def _handshake(word: str) -> None:
    print(word, flush=True)
    sys.stdin.readline()


class _AioAwaitingPassThrough(grpc.aio.UnaryUnaryClientInterceptor):
    """A do-nothing aio interceptor that awaits the call before it returns it, as a layer
    that retries inside the interceptor must (it sees the outcome): the cost of waiting there."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(details, request)
        await call
        return call


def _ablated(stack: str, variant: str, target: str) -> Any:
    """``resilient_channel(target)`` on ``stack`` with the parts of ``variant`` switched off."""
    from octollm_grpc.client import _channel_for as sync_channel_for
    from octollm_grpc.client._channel import AioClientOptions, SyncClientOptions
    from octollm_grpc.client.aio import _channel_for as aio_channel_for

    off = variants.CLIENT_ABLATIONS[variant]
    if "otel" in off:
        from octollm_grpc.observability import _otel

        # What every hook finds without opentelemetry-api.
        _otel._trace = None  # type: ignore[attr-defined,assignment]
    keywords: dict[str, Any] = {name: None for name in ("retry", "budget", "breaker")
                                if name in off}
    options_type = SyncClientOptions if stack == "sync" else AioClientOptions
    settings = options_type(target=target, **keywords)
    core, parsed = settings.resilience()
    if "metrics" in off:
        core.metrics = None
    channel_for: Any = sync_channel_for if stack == "sync" else aio_channel_for
    return channel_for(settings, core, settings.channel_options(parsed))


def _channel(stack: str, variant: str, target: str) -> Any:
    if variant in variants.CLIENT_ABLATIONS:
        return _ablated(stack, variant, target)
    if variant in ("bare_no_grpc_retries", "client_floor_no_grpc_retries"):
        # resilient_channel's channel option: grpc core's retry filter off (a cheaper call).
        options = [("grpc.enable_retries", 0)]
        floor = variant == "client_floor_no_grpc_retries"
        if stack == "sync":
            channel = grpc.insecure_channel(target, options)
            return grpc.intercept_channel(channel, overhead._PassThrough()) if floor else channel
        return grpc.aio.insecure_channel(
            target, options, interceptors=[overhead._AioPassThrough()] if floor else None)
    if variant == "client_floor_await":
        if stack == "sync":  # a blocking continuation has always waited: the floor itself
            return grpc.intercept_channel(
                grpc.insecure_channel(target, [("grpc.enable_retries", 0)]),
                overhead._PassThrough())
        return grpc.aio.insecure_channel(target, [("grpc.enable_retries", 0)],
                                         interceptors=[_AioAwaitingPassThrough()])
    if variant == "client_floor2":
        if stack == "sync":
            return grpc.intercept_channel(grpc.insecure_channel(target), overhead._PassThrough(),
                                          overhead._PassThrough())
        return grpc.aio.insecure_channel(
            target, interceptors=[overhead._AioPassThrough(), overhead._AioPassThrough()])
    if stack == "sync":
        return overhead._sync_channel(variant, target)
    return overhead._aio_channel(variant, target)


def _run_sync(variant: str, target: str, n: int, warmup: int) -> None:
    channel = _channel("sync", variant, target)
    method = channel.unary_unary(payload.GET_TASK_PATH, request_serializer=payload.serialize,
                                 response_deserializer=payload.deserialize)
    request = payload.task_message()

    def call() -> Any:
        return method(request, timeout=_TIMEOUT_S, metadata=variants.AUTH_METADATA)

    _phases(call, n, warmup)
    channel.close()


def _phases(call: Callable[[], Any], n: int, warmup: int) -> None:
    for _ in range(warmup):
        call()
    _handshake("ready")
    for _ in range(n):
        call()
    _handshake("done")


async def _run_aio(variant: str, target: str, n: int, warmup: int) -> None:
    channel = _channel("aio", variant, target)
    method = channel.unary_unary(payload.GET_TASK_PATH, request_serializer=payload.serialize,
                                 response_deserializer=payload.deserialize)
    request = payload.task_message()
    for _ in range(warmup):
        await method(request, timeout=_TIMEOUT_S, metadata=variants.AUTH_METADATA)
    # Blocking the loop here is fine: nothing else runs on it while counting is switched.
    _handshake("ready")
    for _ in range(n):
        await method(request, timeout=_TIMEOUT_S, metadata=variants.AUTH_METADATA)
    _handshake("done")
    await channel.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and run the client."""
    stack, variant, target, n, warmup = (sys.argv[1:] if argv is None else list(argv))
    # Our client logs retries and breaker changes: as in production, JSON lines (to /dev/null).
    variants.configure_production_logging()
    if stack == "sync":
        _run_sync(variant, target, int(n), int(warmup))
    else:
        asyncio.run(_run_aio(variant, target, int(n), int(warmup)))


if __name__ == "__main__":
    main()
