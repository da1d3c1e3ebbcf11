"""A benchmark client for instruction counting.

``python -m benchmarks.ir_client STACK VARIANT TARGET N WARMUP``, run under valgrind's callgrind
by :mod:`benchmarks.instructions`: makes ``WARMUP`` successful GetTask calls to ``TARGET`` one
at a time through the ``VARIANT`` channel (``bare``: a plain channel; ``client``:
``resilient_channel``; ``client_floor``: a do-nothing client interceptor) on ``STACK`` (``sync``
or ``aio``), prints ``ready`` and waits for a line on stdin (the driver switches counting on),
makes ``N`` more calls, prints ``done`` and waits for stdin to close (the driver dumps).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import overhead, payload, variants

_TIMEOUT_S = 60.0


def _handshake(word: str) -> None:
    print(word, flush=True)
    sys.stdin.readline()


def _run_sync(variant: str, target: str, n: int, warmup: int) -> None:
    channel = overhead._sync_channel(variant, target)
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
    channel = overhead._aio_channel(variant, target)
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
