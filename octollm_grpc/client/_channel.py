"""What ``resilient_channel`` does on both stacks: resolve the settings, build the options.

The resilient channel is the only retry layer: it sets ``("grpc.enable_retries", 0)``,
because grpcio's own retry filter drops the ``grpc-previous-rpc-attempts`` header and
stacked retries multiply (3 x 3 = 9 attempts). A channel whose options turn gRPC's own
``retryPolicy`` on gets a [`StackedRetriesWarning`][octollm_grpc.client.StackedRetriesWarning].
"""

from __future__ import annotations

import asyncio
import enum
import json
import random
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypedDict

import grpc
from prometheus_client import CollectorRegistry

from octollm_grpc._core.budget import RetryBudget
from octollm_grpc._core.log import get_logger
from octollm_grpc.client._breaker import BreakerSettings, ChannelBreaker, ChannelBreakers
from octollm_grpc.client._config import ClientConfig, parse_config
from octollm_grpc.client._policy import RetryPolicies, RetryPolicy
from octollm_grpc.client._resilience import Resilience
from octollm_grpc.observability._client_metrics import ClientMetrics

__all__ = [
    "DEFAULT",
    "AioChannelKeywords",
    "AioClientOptions",
    "AioKeywords",
    "AsyncSleep",
    "BreakerArg",
    "BudgetArg",
    "ClientOptions",
    "ResilienceKeywords",
    "RetryArg",
    "StackedRetriesWarning",
    "SyncChannelKeywords",
    "SyncClientOptions",
    "SyncKeywords",
    "channel_options",
    "without_channel",
]

_log = get_logger("octollm_grpc.client")


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"


#: "Use the config's setting, or the product default": the default of every policy argument.
DEFAULT = _Default.DEFAULT

RetryArg: TypeAlias = RetryPolicy | RetryPolicies | _Default | None
BudgetArg: TypeAlias = RetryBudget | _Default | None
BreakerArg: TypeAlias = BreakerSettings | ChannelBreaker | ChannelBreakers | _Default | None
#: An aio channel's sleep between attempts.
AsyncSleep: TypeAlias = Callable[[float], Awaitable[None]]


class StackedRetriesWarning(UserWarning):
    """gRPC's own retries are configured on a channel that already retries."""


class ResilienceKeywords(TypedDict, total=False):
    """The keywords every resilient-client factory takes, on both stacks (all optional).

    - ``retry``: a [`RetryPolicy`][octollm_grpc.client.RetryPolicy] for every method,
      [`RetryPolicies`][octollm_grpc.client.RetryPolicies] per method, or ``None`` for no retries.
      Default: the config's, else ``RetryPolicy()``.
    - ``budget``: a [`RetryBudget`][octollm_grpc.client.RetryBudget], or ``None`` for none. Default:
      the target's shared budget (10 tokens, ratio 0.1, or the config's ``retryThrottling``).
    - ``breaker``: [`BreakerSettings`][octollm_grpc.client.BreakerSettings] (the target's shared
      breaker
      with them), a ``ChannelBreaker`` or ``ChannelBreakers`` of your own, or ``None``.
    - ``config``: the same settings as a service-config-style dict or JSON text
      (`parse_config`); explicit arguments win over it.
    - ``clock`` (monotonic seconds, default ``time.monotonic``) and ``rng``: injectable for tests.
    - ``registry``: the Prometheus registry for the client and breaker metrics (default: the
      global one).
    """

    retry: RetryArg
    budget: BudgetArg
    breaker: BreakerArg
    config: Mapping[str, Any] | str | None
    clock: Callable[[], float]
    rng: random.Random | None
    registry: CollectorRegistry | None


class SyncKeywords(ResilienceKeywords, total=False):
    """`ResilienceKeywords` plus ``sleep``: a blocking sleep (default ``time.sleep``)."""

    sleep: Callable[[float], None]


class AioKeywords(ResilienceKeywords, total=False):
    """`ResilienceKeywords` plus ``sleep``: an async sleep (default ``asyncio.sleep``)."""

    sleep: AsyncSleep


class _ChannelKeywords(TypedDict, total=False):
    credentials: grpc.ChannelCredentials | None
    options: Sequence[tuple[str, Any]]
    compression: grpc.Compression | None


class SyncChannelKeywords(SyncKeywords, _ChannelKeywords, total=False):
    """`SyncKeywords` plus the channel's: ``credentials`` (a secure channel with them;
    default ``None``, insecure), ``options`` (grpc channel options) and ``compression``."""


class AioChannelKeywords(AioKeywords, _ChannelKeywords, total=False):
    """`AioKeywords` plus the channel's ``credentials``, ``options`` and ``compression``."""


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """A resilient client's settings but its sleep: the one place their defaults are written.

    The public factories take these as keywords (`SyncChannelKeywords`,
    `AioChannelKeywords`, ...), which mypy checks at the caller, and build the stack from
    the stack's options object (`SyncClientOptions`, `AioClientOptions`).
    """

    target: str
    retry: RetryArg = DEFAULT
    budget: BudgetArg = DEFAULT
    breaker: BreakerArg = DEFAULT
    config: Mapping[str, Any] | str | None = None
    clock: Callable[[], float] = time.monotonic
    rng: random.Random | None = None
    registry: CollectorRegistry | None = None
    credentials: grpc.ChannelCredentials | None = None
    options: Sequence[tuple[str, Any]] = ()
    compression: grpc.Compression | None = None

    def resilience(self) -> tuple[Resilience, ClientConfig]:
        """The channel's resilience core and its parsed config; explicit settings win over it.

        Budgets and breakers built from settings are the ones every channel to the target
        shares.
        """
        parsed = parse_config(self.config) if self.config is not None else ClientConfig()
        retry = self.retry
        if retry is DEFAULT:
            retry = parsed.retry
        elif isinstance(retry, RetryPolicy):
            retry = RetryPolicies(default=retry)
        budget = self.budget
        if budget is DEFAULT:
            budget = (RetryBudget.for_target(self.target, *parsed.budget)
                      if parsed.budget is not None else None)
        breaker = self.breaker
        if breaker is DEFAULT:
            breaker = parsed.breaker
        if isinstance(breaker, BreakerSettings):
            breaker = ChannelBreakers.for_target(self.target, breaker, clock=self.clock,
                                                 registry=self.registry)
        core = Resilience(retry=retry, budget=budget, breakers=breaker, clock=self.clock,
                          rng=self.rng, metrics=ClientMetrics(self.registry),
                          hedging=parsed.hedging)
        return core, parsed

    def channel_options(self, parsed: ClientConfig) -> list[tuple[str, Any]]:
        """The grpc options of the channel: see `channel_options`."""
        return channel_options(self.options, parsed, stacklevel=4)


@dataclass(frozen=True, kw_only=True)
class SyncClientOptions(ClientOptions):
    """The sync stack's options: ``sleep`` blocks."""

    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True, kw_only=True)
class AioClientOptions(ClientOptions):
    """The aio stack's options: ``sleep`` is awaited."""

    sleep: AsyncSleep = asyncio.sleep


def without_channel(factory: str, keywords: Mapping[str, object]) -> None:
    """Raise ``TypeError``, as Python would, for a channel keyword given to ``factory``
    (an interceptor factory: the channel is built elsewhere)."""
    for name in _ChannelKeywords.__optional_keys__:
        if name in keywords:
            raise TypeError(f"{factory}() got an unexpected keyword argument {name!r}")


def _grpc_retry_policy(service_config: Any) -> bool:
    try:
        parsed = json.loads(service_config) if isinstance(service_config, str) else service_config
        return any("retryPolicy" in entry or "hedgingPolicy" in entry
                   for entry in parsed.get("methodConfig", []))
    except (ValueError, TypeError, AttributeError):
        return False


def channel_options(
    options: Sequence[tuple[str, Any]], parsed: ClientConfig, *, stacklevel: int = 3
) -> list[tuple[str, Any]]:
    """``options`` plus ``grpc.enable_retries=0`` (unless set) and the passed-through config.

    ``stacklevel`` points a [`StackedRetriesWarning`][octollm_grpc.client.StackedRetriesWarning] at
    the factory's caller.
    """
    result = list(options)
    given = dict(result)
    if "grpc.enable_retries" not in given:
        result.append(("grpc.enable_retries", 0))
    if parsed.grpc_service_config is not None:
        if "grpc.service_config" in given:
            raise ValueError("a service config came both in config= and in options; "
                             "pass it once")
        result.append(("grpc.service_config", json.dumps(parsed.grpc_service_config)))
    elif _grpc_retry_policy(given.get("grpc.service_config")):
        if given.get("grpc.enable_retries", 0):
            message = ("gRPC's own retryPolicy is enabled on a resilient channel: the two retry "
                       "layers multiply attempts; put the policy in config= and drop "
                       "grpc.enable_retries")
        else:
            message = ("the retryPolicy in grpc.service_config is inactive on a resilient "
                       "channel (grpc.enable_retries=0); put it in config= instead")
        _log.warning("stacked_retries", detail=message)
        warnings.warn(message, StackedRetriesWarning, stacklevel=stacklevel)
    return result

