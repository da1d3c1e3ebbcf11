"""Resilient gRPC clients: retry with backoff and pushback, a retry budget, a circuit breaker.

``resilient_channel(target)`` gives a ``grpc.Channel`` whose calls are retried (3 attempts,
full-jitter backoff, server pushback honoured, deadline-aware), throttled by the target's
retry budget and guarded by its circuit breaker; failed calls raise the typed
:class:`~octollm_grpc.errors.OctoLLMError` subclasses, which are also ``grpc.RpcError``.
The asyncio form is :func:`octollm_grpc.client.aio.resilient_channel`.
"""

from __future__ import annotations

from typing import Unpack

import grpc

from octollm_grpc.client._tls import channel_credentials
from octollm_grpc.client.breaker import (
    DEFAULT_FAILURE_CODES,
    BreakerSettings,
    CircuitBreaker,
    CircuitBreakers,
    CircuitState,
)
from octollm_grpc.client.budget import RetryBudget
from octollm_grpc.client.channel import (
    DEFAULT,
    ResilienceKeywords,
    StackedRetriesWarning,
    SyncChannelKeywords,
    SyncClientOptions,
    SyncKeywords,
    without_channel,
)
from octollm_grpc.client.config import ClientConfig, parse_config
from octollm_grpc.client.interceptors import ResilientInterceptor
from octollm_grpc.client.observe import CallObserver
from octollm_grpc.client.policy import RetryPolicies, RetryPolicy
from octollm_grpc.client.retry import ATTEMPTS_HEADER, Resilience

__all__ = [
    "ATTEMPTS_HEADER",
    "DEFAULT",
    "DEFAULT_FAILURE_CODES",
    "BreakerSettings",
    "CircuitBreaker",
    "CircuitBreakers",
    "CircuitState",
    "ClientConfig",
    "Resilience",
    "ResilienceKeywords",
    "ResilientInterceptor",
    "RetryBudget",
    "RetryPolicies",
    "RetryPolicy",
    "StackedRetriesWarning",
    "SyncChannelKeywords",
    "SyncKeywords",
    "channel_credentials",
    "parse_config",
    "resilient_channel",
    "resilient_interceptor",
]


def resilient_interceptor(
    target: str, **keywords: Unpack[SyncKeywords]
) -> ResilientInterceptor:
    """The interceptor :func:`resilient_channel` installs, for a channel built elsewhere.

    Takes :func:`resilient_channel`'s keywords but the channel's own (:class:`SyncKeywords`).
    That channel must have ``("grpc.enable_retries", 0)`` in its options (see docs/client.md).
    """
    without_channel("resilient_interceptor", keywords)
    settings = SyncClientOptions(target=target, **keywords)
    core, _ = settings.resilience()
    return ResilientInterceptor(core, settings.sleep)


def resilient_channel(
    target: str, **keywords: Unpack[SyncChannelKeywords]
) -> grpc.Channel:
    """A channel to ``target`` whose calls are retried, budgeted and circuit-broken.

    Every keyword is optional (:class:`SyncChannelKeywords`):

    - ``retry``: a :class:`RetryPolicy` for every method, :class:`RetryPolicies` per method,
      or ``None`` for no retries. Default: the config's, else ``RetryPolicy()``.
    - ``budget``: a :class:`RetryBudget`, or ``None`` for none. Default: the target's shared
      budget (10 tokens, ratio 0.1, or the config's ``retryThrottling``).
    - ``breaker``: :class:`BreakerSettings` (the target's shared breaker with them), a
      :class:`CircuitBreaker` or :class:`CircuitBreakers` of your own, or ``None``.
    - ``config``: the same settings as a service-config-style dict or JSON text
      (:func:`parse_config`); explicit arguments win over it.
    - ``credentials``: a secure channel with them; otherwise (``None``) an insecure one.
      ``options`` (default ``()``) and ``compression`` (default ``None``) go to grpc.
    - ``clock`` (monotonic seconds, default ``time.monotonic``), ``sleep`` (default
      ``time.sleep``) and ``rng``: injectable for tests.
    - ``registry``: the Prometheus registry for the client and breaker metrics (default: the
      global one); see :mod:`octollm_grpc.client.metrics`.

    Called while a handler served by our server stack runs, a call gets that call's remaining
    time as its deadline (or keeps a shorter timeout of its own) and its ``x-request-id``
    (:mod:`octollm_grpc.propagation`).
    """
    settings = SyncClientOptions(target=target, **keywords)
    core, parsed = settings.resilience()
    channel_opts = settings.channel_options(parsed)
    if settings.credentials is not None:
        channel = grpc.secure_channel(target, settings.credentials, channel_opts,
                                      settings.compression)
    else:
        channel = grpc.insecure_channel(target, channel_opts, settings.compression)
    # The observer is outermost: it sees each call once, and the retries see its deadline.
    return grpc.intercept_channel(channel, CallObserver(core.metrics, settings.clock),
                                  ResilientInterceptor(core, settings.sleep))
