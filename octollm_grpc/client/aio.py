"""The asyncio form of [`octollm_grpc.client`][octollm_grpc.client]: a resilient
``grpc.aio.Channel``.

The same policies, budget and breakers as the sync channel (they are shared objects, safe
across threads and tasks); only the waiting is awaited. ``sleep`` is an async callable.
"""

from __future__ import annotations

from typing import Any, Unpack

from grpc import aio

from octollm_grpc.client._aio_interceptors import ObservedUnaryUnary, aio_interceptors
from octollm_grpc.client._channel import (
    AioChannelKeywords,
    AioClientOptions,
    AioKeywords,
    without_channel,
)
from octollm_grpc.client._observe import aio_observers
from octollm_grpc.client._resilience import Resilience

__all__ = [
    "resilient_channel",
    "resilient_interceptors",
]


def resilient_interceptors(
    target: str, **keywords: Unpack[AioKeywords]
) -> list[aio.ClientInterceptor]:
    """The interceptors [`resilient_channel`][octollm_grpc.client.resilient_channel] installs, for a
    channel built elsewhere: the
    observers (propagation, call metrics), then the retry layer, each one per call shape (unary
    calls get one interceptor doing both).

    Takes [`resilient_channel`][octollm_grpc.client.resilient_channel]'s keywords but the channel's
    own (`AioKeywords`).
    That channel must have ``("grpc.enable_retries", 0)`` in its options (see docs/client.md).

    Args:
        target: The target the channel connects to (it keys the shared budget and breaker).
        **keywords: [`resilient_channel`][octollm_grpc.client.resilient_channel]'s keywords but the
            channel's own.

    Returns:
        The interceptors, outermost first, for ``grpc.aio.*_channel(interceptors=...)``.

    Raises:
        TypeError: An unknown keyword, or one of the channel's own (``credentials``,
            ``options``, ``compression``).
    """
    without_channel("resilient_interceptors", keywords)
    settings = AioClientOptions(target=target, **keywords)
    return _interceptors(settings, settings.resilience()[0])


def resilient_channel(
    target: str, **keywords: Unpack[AioChannelKeywords]
) -> aio.Channel:
    """A ``grpc.aio`` channel to ``target`` whose calls are retried, budgeted and
    circuit-broken; the keywords are those of
    [`octollm_grpc.client.resilient_channel`][octollm_grpc.client.resilient_channel]
    (`AioChannelKeywords`), with an async ``sleep`` (default ``asyncio.sleep``).

    Args:
        target: ``host:port`` (any gRPC target).
        **keywords: The keywords of
            [`octollm_grpc.client.resilient_channel`][octollm_grpc.client.resilient_channel].

    Returns:
        A ``grpc.aio.Channel`` (create it inside the running event loop).

    Raises:
        TypeError: An unknown keyword or a value of the wrong type.
        ValueError: A ``config`` that does not parse, or an out-of-range value.
    """
    settings = AioClientOptions(target=target, **keywords)
    core, parsed = settings.resilience()
    # Here, not in _channel_for: a StackedRetriesWarning points at the caller (stacklevel).
    return _channel_for(settings, core, settings.channel_options(parsed))


def _channel_for(settings: AioClientOptions, core: Resilience,
                 channel_opts: list[tuple[str, Any]]) -> aio.Channel:
    """The channel of `resilient_channel` around ``core`` (the benchmarks build their
    variants' cores themselves)."""
    target = settings.target
    interceptors = _interceptors(settings, core, alone=True)
    if settings.credentials is not None:
        return aio.secure_channel(target, settings.credentials, channel_opts,
                                  settings.compression, interceptors)
    return aio.insecure_channel(target, channel_opts, settings.compression, interceptors)


def _interceptors(settings: AioClientOptions, core: Resilience, *,
                  alone: bool = False) -> list[Any]:
    # The observers come first (outermost): each call is seen once, and retries see its deadline.
    # Unary calls get one interceptor doing both layers' work (two stacked cost a grpc layer
    # more per call); grpc.aio files it under unary calls only.
    # ``alone``: the channel is ours, no other interceptor follows for unary calls.
    return [ObservedUnaryUnary(core, settings.sleep, settings.clock, alone=alone),
            *aio_observers(core.metrics, settings.clock)[1:],
            *aio_interceptors(core, settings.sleep)[1:]]
