"""Resilient gRPC clients: retry with backoff and pushback, a retry budget, a circuit breaker.

``resilient_channel(target)`` gives a ``grpc.Channel`` whose calls are retried (3 attempts,
full-jitter backoff, server pushback honoured, deadline-aware), throttled by the target's
retry budget and guarded by its circuit breaker; failed calls raise the typed
`OctoLLMError` subclasses, which are also ``grpc.RpcError``.
The asyncio form is
[`octollm_grpc.client.aio.resilient_channel`][octollm_grpc.client.aio.resilient_channel].
"""

from __future__ import annotations

from typing import Any, Unpack

import grpc

from octollm_grpc._core.breaker import CircuitState
from octollm_grpc._core.budget import RetryBudget
from octollm_grpc.client._breaker import BreakerSettings, ChannelBreaker
from octollm_grpc.client._channel import (
    StackedRetriesWarning,
    SyncChannelKeywords,
    SyncClientOptions,
    SyncKeywords,
    without_channel,
)
from octollm_grpc.client._interceptors import ObservedResilientInterceptor
from octollm_grpc.client._policy import RetryPolicies, RetryPolicy
from octollm_grpc.client._resilience import Resilience
from octollm_grpc.client._sync_hedging import HedgingChannel
from octollm_grpc.client._tls import channel_credentials

__all__ = [
    "BreakerSettings",
    "ChannelBreaker",
    "CircuitState",
    "RetryBudget",
    "RetryPolicies",
    "RetryPolicy",
    "StackedRetriesWarning",
    "channel_credentials",
    "resilient_channel",
    "resilient_interceptors",
]


def resilient_interceptors(
    target: str, **keywords: Unpack[SyncKeywords]
) -> list[grpc.UnaryUnaryClientInterceptor]:
    """Everything [`resilient_channel`][octollm_grpc.client.resilient_channel] installs, for a
    channel built elsewhere.

    Use it as ``grpc.intercept_channel(channel, *resilient_interceptors(target))``: the
    observer's work (deadline and request-id propagation, trace context, the ``grpc_client_*``
    metrics) outermost, then the retry layer's (retries, budget, breaker). The channel must have
    ``("grpc.enable_retries", 0)`` in its options (see docs/client.md).

    Args:
        target: The target the channel connects to (it keys the shared budget and breaker).
        **keywords: [`resilient_channel`][octollm_grpc.client.resilient_channel]'s keywords but the
            channel's own
            (``retry``, ``budget``, ``breaker``, ``config``, ``clock``, ``sleep``, ``rng``,
            ``registry``).

    Returns:
        The interceptors, outermost first (each implements all four call shapes; today one,
        which does both layers' work).

    Raises:
        TypeError: An unknown keyword, or one of the channel's own (``credentials``,
            ``options``, ``compression``).
        ValueError: A ``config`` that does not parse.
    """
    without_channel("resilient_interceptors", keywords)
    settings = SyncClientOptions(target=target, **keywords)
    return _interceptors(settings, settings.resilience()[0])


def _interceptors(settings: SyncClientOptions, core: Resilience) -> list[Any]:
    # One interceptor, the observer's work outermost in it: it sees each call once, and the
    # retries see its deadline. (Two stacked cost a grpc interceptor layer more per call.)
    return [ObservedResilientInterceptor(core, settings.sleep, settings.clock)]


def resilient_channel(
    target: str, **keywords: Unpack[SyncChannelKeywords]
) -> grpc.Channel:
    """A channel to ``target`` whose calls are retried, budgeted and circuit-broken.

    Every keyword is optional (`SyncChannelKeywords`):

    - ``retry``: a [`RetryPolicy`][octollm_grpc.client.RetryPolicy] for every method,
      [`RetryPolicies`][octollm_grpc.client.RetryPolicies] per method,
      or ``None`` for no retries. Default: the config's, else ``RetryPolicy()``.
    - ``budget``: a [`RetryBudget`][octollm_grpc.client.RetryBudget], or ``None`` for none. Default:
      the target's shared
      budget (10 tokens, ratio 0.1, or the config's ``retryThrottling``).
    - ``breaker``: [`BreakerSettings`][octollm_grpc.client.BreakerSettings] (the target's shared
      breaker with them), a
      [`ChannelBreaker`][octollm_grpc.client.ChannelBreaker] or `ChannelBreakers` of your own, or
      ``None``.
    - ``config``: the same settings as a service-config-style dict or JSON text
      (`parse_config`); explicit arguments win over it.
    - ``credentials``: a secure channel with them; otherwise (``None``) an insecure one.
      ``options`` (default ``()``) and ``compression`` (default ``None``) go to grpc.
    - ``clock`` (monotonic seconds, default ``time.monotonic``), ``sleep`` (default
      ``time.sleep``) and ``rng``: injectable for tests.
    - ``registry``: the Prometheus registry for the client and breaker metrics (default: the
      global one); see `octollm_grpc.observability._client_metrics`.

    Called while a handler served by our server stack runs, a call gets that call's remaining
    time as its deadline (or keeps a shorter timeout of its own) and its ``x-request-id``
    (`octollm_grpc.observability._propagation`).

    Args:
        target: ``host:port`` (any gRPC target).
        **keywords: The options above.

    Returns:
        A ``grpc.Channel``; its calls raise the typed errors.

    Raises:
        TypeError: An unknown keyword or a value of the wrong type.
        ValueError: A ``config`` that does not parse, or an out-of-range value.
    """
    settings = SyncClientOptions(target=target, **keywords)
    core, parsed = settings.resilience()
    # Here, not in _channel_for: a StackedRetriesWarning points at the caller (stacklevel).
    return _channel_for(settings, core, settings.channel_options(parsed))


def _channel_for(settings: SyncClientOptions, core: Resilience,
                 channel_opts: list[tuple[str, Any]]) -> grpc.Channel:
    """The channel of `resilient_channel` around ``core`` (the benchmarks build their
    variants' cores themselves)."""
    target = settings.target
    if settings.credentials is not None:
        channel = grpc.secure_channel(target, settings.credentials, channel_opts,
                                      settings.compression)
    else:
        channel = grpc.insecure_channel(target, channel_opts, settings.compression)
    intercepted = grpc.intercept_channel(channel, *_interceptors(settings, core))
    # Hedged methods' blocking calls wait on .future(), so their hedges can run beside them.
    return HedgingChannel(intercepted, core) if core.hedging is not None else intercepted
