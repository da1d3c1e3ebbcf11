"""What ``resilient_channel`` does on both stacks: resolve the settings, build the options.

The resilient channel is the only retry layer: it sets ``("grpc.enable_retries", 0)``,
because grpcio's own retry filter drops the ``grpc-previous-rpc-attempts`` header and
stacked retries multiply (3 x 3 = 9 attempts). A channel whose options turn gRPC's own
``retryPolicy`` on gets a :class:`StackedRetriesWarning`.
"""

from __future__ import annotations

import enum
import json
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import structlog
from prometheus_client import CollectorRegistry

from octollm_grpc.client.breaker import BreakerSettings, CircuitBreaker, CircuitBreakers
from octollm_grpc.client.budget import RetryBudget
from octollm_grpc.client.config import ClientConfig, parse_config
from octollm_grpc.client.metrics import ClientMetrics
from octollm_grpc.client.policy import RetryPolicies, RetryPolicy
from octollm_grpc.client.retry import Resilience

__all__ = [
    "DEFAULT",
    "BreakerArg",
    "BudgetArg",
    "RetryArg",
    "StackedRetriesWarning",
    "build_resilience",
    "channel_options",
]

_log = structlog.get_logger("octollm_grpc.client")


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"


#: "Use the config's setting, or the product default": the default of every policy argument.
DEFAULT = _Default.DEFAULT

RetryArg: TypeAlias = RetryPolicy | RetryPolicies | _Default | None
BudgetArg: TypeAlias = RetryBudget | _Default | None
BreakerArg: TypeAlias = BreakerSettings | CircuitBreaker | CircuitBreakers | _Default | None


class StackedRetriesWarning(UserWarning):
    """gRPC's own retries are configured on a channel that already retries."""


def build_resilience(
    target: str,
    *,
    retry: RetryArg,
    budget: BudgetArg,
    breaker: BreakerArg,
    config: Mapping[str, Any] | str | None,
    clock: Callable[[], float],
    rng: random.Random | None,
    registry: CollectorRegistry | None,
) -> tuple[Resilience, ClientConfig]:
    """The channel's resilience core; explicit arguments win over ``config``.

    Budgets and breakers built from settings are the ones every channel to ``target`` shares.
    """
    parsed = parse_config(config) if config is not None else ClientConfig()
    if retry is DEFAULT:
        retry = parsed.retry
    elif isinstance(retry, RetryPolicy):
        retry = RetryPolicies(default=retry)
    if budget is DEFAULT:
        budget = (RetryBudget.for_target(target, *parsed.budget)
                  if parsed.budget is not None else None)
    if breaker is DEFAULT:
        breaker = parsed.breaker
    if isinstance(breaker, BreakerSettings):
        breaker = CircuitBreakers.for_target(target, breaker, clock=clock, registry=registry)
    core = Resilience(retry=retry, budget=budget, breakers=breaker, clock=clock,
                      rng=rng, metrics=ClientMetrics(registry))
    return core, parsed


def _grpc_retry_policy(service_config: Any) -> bool:
    try:
        parsed = json.loads(service_config) if isinstance(service_config, str) else service_config
        return any("retryPolicy" in entry or "hedgingPolicy" in entry
                   for entry in parsed.get("methodConfig", []))
    except (ValueError, TypeError, AttributeError):
        return False


def channel_options(
    options: Sequence[tuple[str, Any]], parsed: ClientConfig
) -> list[tuple[str, Any]]:
    """``options`` plus ``grpc.enable_retries=0`` (unless set) and the passed-through config."""
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
        warnings.warn(message, StackedRetriesWarning, stacklevel=3)
    return result

