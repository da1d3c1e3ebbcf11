"""Client resilience from a dict or JSON in gRPC service-config style.

```json
{
  "methodConfig": [
    {"name": [{"service": "pkg.Tasks", "method": "GetTask"}],
     "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "2s",
                     "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}},
    {"name": [{"service": "pkg.Tasks", "method": "CreateTask"}]}
  ],
  "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
  "circuitBreaker": {"failureThreshold": 5, "resetTimeout": "30s", "halfOpenProbes": 1}
}
```

``hedgingPolicy`` (gRFC A6: ``maxAttempts``, ``hedgingDelay``, ``nonFatalStatusCodes``) hedges
a method's unary and response-stream calls instead of retrying them
(`octollm_grpc.client._hedging`); an entry with both it and ``retryPolicy`` is a
``ValueError``, as A6 says. ``retryPolicy`` takes A6's fields plus ``pushbackStatusCodes``,
``perAttemptTimeout`` and ``replayableRequests``; a ``methodConfig`` entry without one means
"never retry" (as in gRPC). A name ``{}`` (or ``{"service": ""}``) sets the default; methods
matched by no entry keep the product default (3 attempts). ``retryThrottling: null`` turns the
budget off, ``circuitBreaker: null`` the breaker. The fields gRPC itself acts on
(``loadBalancingConfig``, ``loadBalancingPolicy``, ``healthCheckConfig``; a method's
``timeout``, ``waitForReady``, ``maxRequestMessageBytes``, ``maxResponseMessageBytes``) are
handed to it unchanged. Any other field is a ``ValueError`` naming it: a config that is
accepted takes effect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from octollm_grpc._core.budget import RetryBudget
from octollm_grpc.client._breaker import BreakerSettings
from octollm_grpc.client._hedging import HedgingPolicies, HedgingPolicy
from octollm_grpc.client._policy import RetryPolicies, RetryPolicy, status_codes

__all__ = ["ClientConfig", "parse_config"]

_DURATION = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)s\s*$")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What a config asks for; ``budget`` is ``(max_tokens, token_ratio)`` or ``None`` (off)."""

    retry: RetryPolicies = field(default_factory=RetryPolicies)
    budget: tuple[float, float] | None = (10.0, 0.1)
    breaker: BreakerSettings | None = field(default_factory=BreakerSettings)
    grpc_service_config: dict[str, Any] | None = None
    """The rest of the config, for gRPC's own ``grpc.service_config`` option."""
    hedging: HedgingPolicies | None = None
    """The ``hedgingPolicy`` entries (``None``: no method is hedged)."""


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _DURATION.match(value):
        return float(value.strip()[:-1])
    raise ValueError(f"{what}: expected seconds as a number or a duration like '0.5s', "
                     f"not {value!r}")


def _codes(value: Any, what: str) -> Any:
    if not isinstance(value, list):
        raise ValueError(f"{what}: expected a list of status codes, not {value!r}")
    return status_codes(value, what)


def _identity(value: Any, what: str) -> Any:
    return value


_Field = tuple[str, Callable[[Any, str], Any]]

_RETRY_FIELDS: dict[str, _Field] = {
    "maxAttempts": ("max_attempts", _identity),
    "initialBackoff": ("initial_backoff", _seconds),
    "maxBackoff": ("max_backoff", _seconds),
    "backoffMultiplier": ("backoff_multiplier", _identity),
    "retryableStatusCodes": ("retryable_codes", _codes),
    "pushbackStatusCodes": ("pushback_codes", _codes),
    "perAttemptTimeout": ("per_attempt_timeout", _seconds),
    "replayableRequests": ("replayable_requests", _identity),
}

_HEDGING_FIELDS: dict[str, _Field] = {
    "maxAttempts": ("max_attempts", _identity),
    "hedgingDelay": ("hedging_delay", _seconds),
    "nonFatalStatusCodes": ("non_fatal_codes", _codes),
}

_BREAKER_FIELDS: dict[str, _Field] = {
    "failureThreshold": ("failure_threshold", _identity),
    "failureRateThreshold": ("failure_rate_threshold", _identity),
    "slidingWindowSize": ("window_size", _identity),
    "minimumCalls": ("minimum_calls", _identity),
    "resetTimeout": ("reset_timeout", _seconds),
    "resetTimeoutMultiplier": ("reset_timeout_multiplier", _identity),
    "maxResetTimeout": ("max_reset_timeout", _seconds),
    "halfOpenProbes": ("half_open_probes", _identity),
    "probeTimeout": ("probe_timeout", _seconds),
    "failureStatusCodes": ("failure_codes", _codes),
    "perMethod": ("per_method", _identity),
}


def _kwargs(section: Any, fields: dict[str, _Field], what: str) -> dict[str, Any]:
    if not isinstance(section, Mapping):
        raise ValueError(f"{what} must be an object, not {section!r}")
    unknown = set(section) - set(fields)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for key, value in section.items():
        name, convert = fields[key]
        kwargs[name] = None if value is None else convert(value, f"{what}.{key}")
    return kwargs


#: Top-level fields: ours, and those gRPC acts on (given to it as ``grpc.service_config``).
_TOP_FIELDS = frozenset({"methodConfig", "retryThrottling", "circuitBreaker",
                         "loadBalancingConfig", "loadBalancingPolicy", "healthCheckConfig"})
#: A methodConfig entry's fields: ours (``retryPolicy``), and those gRPC acts on.
_METHOD_FIELDS = frozenset({"name", "retryPolicy", "hedgingPolicy", "timeout", "waitForReady",
                            "maxRequestMessageBytes", "maxResponseMessageBytes"})
_NAME_FIELDS = frozenset({"service", "method"})


def _refuse_unknown(section: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    unknown = sorted(str(k) for k in set(section) - known)
    if unknown:
        raise ValueError(f"{what}: unsupported field(s) {unknown}; supported: {sorted(known)}")


def _names(entry: Mapping[str, Any], index: int) -> list[str]:
    names = entry.get("name")
    if not isinstance(names, list) or not names:
        raise ValueError(f"methodConfig[{index}].name must be a non-empty list")
    keys = []
    for name in names:
        if not isinstance(name, Mapping):
            raise ValueError(f"methodConfig[{index}].name entries must be objects")
        _refuse_unknown(name, _NAME_FIELDS, f"methodConfig[{index}].name")
        service = name.get("service") or ""
        method = name.get("method") or ""
        if method and not service:
            raise ValueError(f"methodConfig[{index}]: a method name needs its service")
        keys.append(f"{service}/{method}" if method else service)
    return keys


def _hedging(entry: Mapping[str, Any], index: int) -> HedgingPolicy | None:
    section = entry.get("hedgingPolicy")
    if section is None:
        return None
    what = f"methodConfig[{index}]"
    if entry.get("retryPolicy") is not None:
        raise ValueError(f"{what} has both retryPolicy and hedgingPolicy: a method is either "
                         "retried or hedged (gRFC A6)")
    kwargs = _kwargs(section, _HEDGING_FIELDS, f"{what}.hedgingPolicy")
    if "max_attempts" not in kwargs:
        raise ValueError(f"{what}.hedgingPolicy.maxAttempts is required")
    try:
        return HedgingPolicy(**kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what}.hedgingPolicy: {error}") from None


def parse_config(config: Mapping[str, Any] | str) -> ClientConfig:
    """Parse a service-config-style dict or JSON text; raises ``ValueError`` on mistakes."""
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError as error:
            raise ValueError(f"config is not valid JSON: {error}") from None
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be an object, not {type(config).__name__}")
    _refuse_unknown(config, _TOP_FIELDS, "config")

    default: RetryPolicy | None = RetryPolicy()
    methods: dict[str, RetryPolicy | None] = {}
    hedged: dict[str, HedgingPolicy | None] = {}
    passthrough_methods = []
    entries = config.get("methodConfig", [])
    if not isinstance(entries, list):
        raise ValueError("methodConfig must be a list")
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ValueError(f"methodConfig[{index}] must be an object")
        _refuse_unknown(entry, _METHOD_FIELDS, f"methodConfig[{index}]")
        section = entry.get("retryPolicy")
        policy = None if section is None else RetryPolicy(
            **_kwargs(section, _RETRY_FIELDS, f"methodConfig[{index}].retryPolicy"))
        hedging = _hedging(entry, index)
        for key in _names(entry, index):
            if key in methods or (key == "" and "" in methods):
                raise ValueError(f"methodConfig: {key or 'the default'!r} is configured twice")
            if key == "":
                default = policy
            methods[key] = policy
            hedged[key] = hedging
        rest = {k: v for k, v in entry.items() if k not in ("retryPolicy", "hedgingPolicy")}
        if set(rest) - {"name"}:
            passthrough_methods.append(rest)
    methods.pop("", None)
    hedging_default = hedged.pop("", None)
    hedging_policies = (HedgingPolicies(hedging_default, hedged)
                        if hedging_default is not None or any(hedged.values()) else None)

    budget: tuple[float, float] | None = (10.0, 0.1)
    if "retryThrottling" in config:
        throttling = config["retryThrottling"]
        if throttling is None or throttling is False:
            budget = None
        else:
            kwargs = _kwargs(throttling, {"maxTokens": ("max_tokens", _identity),
                                          "tokenRatio": ("token_ratio", _identity)},
                             "retryThrottling")
            budget = (kwargs.get("max_tokens", 10.0), kwargs.get("token_ratio", 0.1))
            RetryBudget(*budget)  # validates now, not when the first channel is built

    breaker: BreakerSettings | None = BreakerSettings()
    if "circuitBreaker" in config:
        section = config["circuitBreaker"]
        breaker = None if section is None or section is False else BreakerSettings(
            **_kwargs(section, _BREAKER_FIELDS, "circuitBreaker"))

    rest = {k: v for k, v in config.items()
            if k not in ("methodConfig", "retryThrottling", "circuitBreaker")}
    if passthrough_methods:
        rest["methodConfig"] = passthrough_methods
    return ClientConfig(RetryPolicies(default, methods), budget, breaker, rest or None,
                        hedging_policies)
