"""The asyncio form of :mod:`octollm_grpc.client`: a resilient ``grpc.aio.Channel``.

The same policies, budget and breakers as the sync channel (they are shared objects, safe
across threads and tasks); only the waiting is awaited. ``sleep`` is an async callable.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from grpc import aio
from prometheus_client import CollectorRegistry

from octollm_grpc.client.aio_interceptors import AsyncSleep, aio_interceptors
from octollm_grpc.client.channel import (
    DEFAULT,
    BreakerArg,
    BudgetArg,
    RetryArg,
    build_resilience,
    channel_options,
)
from octollm_grpc.client.observe import aio_observers

__all__ = ["resilient_channel", "resilient_interceptors"]


def resilient_interceptors(
    target: str,
    *,
    retry: RetryArg = DEFAULT,
    budget: BudgetArg = DEFAULT,
    breaker: BreakerArg = DEFAULT,
    config: Mapping[str, Any] | str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: AsyncSleep = asyncio.sleep,
    rng: random.Random | None = None,
    registry: CollectorRegistry | None = None,
) -> list[aio.ClientInterceptor]:
    """The interceptors :func:`resilient_channel` installs, for a channel built elsewhere: the
    observers (propagation, call metrics), then the retry layer, each one per call shape.

    That channel must have ``("grpc.enable_retries", 0)`` in its options (see docs/client.md).
    """
    core, _ = build_resilience(target, retry=retry, budget=budget, breaker=breaker,
                               config=config, clock=clock, rng=rng, registry=registry)
    return [*aio_observers(core.metrics, clock), *aio_interceptors(core, sleep)]


def resilient_channel(
    target: str,
    *,
    retry: RetryArg = DEFAULT,
    budget: BudgetArg = DEFAULT,
    breaker: BreakerArg = DEFAULT,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    config: Mapping[str, Any] | str | None = None,
    compression: grpc.Compression | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: AsyncSleep = asyncio.sleep,
    rng: random.Random | None = None,
    registry: CollectorRegistry | None = None,
) -> aio.Channel:
    """A ``grpc.aio`` channel to ``target`` whose calls are retried, budgeted and
    circuit-broken; the arguments are those of :func:`octollm_grpc.client.resilient_channel`.
    """
    core, parsed = build_resilience(target, retry=retry, budget=budget, breaker=breaker,
                                    config=config, clock=clock, rng=rng, registry=registry)
    channel_opts = channel_options(options, parsed)
    # The observers come first (outermost): each call is seen once, and retries see its deadline.
    interceptors = [*aio_observers(core.metrics, clock), *aio_interceptors(core, sleep)]
    if credentials is not None:
        return aio.secure_channel(target, credentials, channel_opts, compression, interceptors)
    return aio.insecure_channel(target, channel_opts, compression, interceptors)
