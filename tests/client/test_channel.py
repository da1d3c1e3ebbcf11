"""resilient_channel and its config, sync and aio: defaults, dict/JSON config, gRPC options."""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Sequence

import grpc
import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc.client import (
    BreakerSettings,
    RetryPolicy,
    StackedRetriesWarning,
    resilient_channel,
)
from octollm_grpc.client import aio as client_aio
from octollm_grpc.client._channel import channel_options
from octollm_grpc.client._config import ClientConfig, parse_config
from octollm_grpc.testing import FakeClock, FaultInjector, serve
from tests.client.backend import OTHER, SUCCEED, UNARY, Backend
from tests.client.channels import aio_channel, sync_channel

#: More attempts than any test here makes: "the server is down".
EVERY_ATTEMPT = 10_000

CONFIG = {
    "methodConfig": [
        {"name": [{"service": "test.Echo", "method": "Unary"}],
         "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.5s",
                         "backoffMultiplier": 3, "retryableStatusCodes": ["UNAVAILABLE"]}},
        {"name": [{"service": "test.Echo", "method": "Other"}]},
    ],
    "retryThrottling": None,
    "circuitBreaker": {"failureThreshold": 100, "resetTimeout": "5s", "halfOpenProbes": 2},
}


# -- parsing -----------------------------------------------------------------------------------


def test_config_from_dict_and_json_are_the_same() -> None:
    """A dict and its JSON text parse to the same settings, with durations and code names."""
    from_dict = parse_config(CONFIG)
    assert from_dict == parse_config(json.dumps(CONFIG))
    unary = from_dict.retry.policy_for(UNARY)
    assert unary == RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.5,
                                backoff_multiplier=3)
    assert from_dict.retry.policy_for(OTHER) is None  # an entry without retryPolicy: no retry
    assert from_dict.retry.policy_for("/other.Svc/M") == RetryPolicy()  # product default
    assert from_dict.budget is None
    assert from_dict.breaker == BreakerSettings(failure_threshold=100, reset_timeout=5,
                                                half_open_probes=2)
    assert from_dict.grpc_service_config is None


def test_config_default_entry_throttling_and_passthrough() -> None:
    """{} names the default; retryThrottling sets the budget; other keys go to gRPC unchanged."""
    parsed = parse_config({
        "methodConfig": [
            {"name": [{}], "retryPolicy": {"maxAttempts": 2, "perAttemptTimeout": 1.5,
                                           "replayableRequests": True}},
            {"name": [{"service": "a.B"}], "timeout": "2s", "waitForReady": True},
        ],
        "retryThrottling": {"maxTokens": 20, "tokenRatio": 0.5},
        "loadBalancingConfig": [{"round_robin": {}}],
    })
    assert parsed.retry.default == RetryPolicy(max_attempts=2, per_attempt_timeout=1.5,
                                               replayable_requests=True)
    assert parsed.retry.policy_for("/a.B/C") is None
    assert parsed.budget == (20, 0.5)
    assert parsed.grpc_service_config == {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": [{"service": "a.B"}], "timeout": "2s", "waitForReady": True}],
    }
    assert parse_config({"circuitBreaker": None}).breaker is None
    windowed = parse_config({"circuitBreaker": {
        "failureThreshold": None, "failureRateThreshold": 0.5, "slidingWindowSize": 40,
        "minimumCalls": 20, "resetTimeoutMultiplier": 2, "maxResetTimeout": "120s",
        "probeTimeout": 10, "failureStatusCodes": ["UNAVAILABLE"], "perMethod": True}}).breaker
    assert windowed == BreakerSettings(
        failure_threshold=None, failure_rate_threshold=0.5, window_size=40, minimum_calls=20,
        reset_timeout_multiplier=2, max_reset_timeout=120, probe_timeout=10,
        failure_codes=frozenset({grpc.StatusCode.UNAVAILABLE}), per_method=True)


@pytest.mark.parametrize("bad", [
    "{not json",
    "[]",
    {"methodConfig": {}},
    {"methodConfig": [{"name": []}]},
    {"methodConfig": [{"name": [{"method": "M"}]}]},
    {"methodConfig": [{"name": [{"service": "s"}]}, {"name": [{"service": "s"}]}]},
    {"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempt": 3}}]},
    {"methodConfig": [{"name": [{}], "retryPolicy": {"initialBackoff": "soon"}}]},
    {"methodConfig": [{"name": [{}], "retryPolicy": {"retryableStatusCodes": "UNAVAILABLE"}}]},
    {"circuitBreaker": {"threshold": 5}},
    {"retryThrottling": {"maxTokens": 5000}},
])
def test_config_mistakes_are_reported(bad: object) -> None:
    """Typos and invalid values in a config raise ValueError (or TypeError), never pass silently."""
    with pytest.raises((ValueError, TypeError)):
        parse_config(bad)  # type: ignore[arg-type]


# -- channel options ---------------------------------------------------------------------------


def test_options_turn_grpc_retries_off_unless_set() -> None:
    """grpc.enable_retries=0 is added (grpcio's retry filter drops our attempt header)."""
    assert ("grpc.enable_retries", 0) in channel_options([], ClientConfig())
    kept = channel_options([("grpc.enable_retries", 1)], ClientConfig())
    assert kept == [("grpc.enable_retries", 1)]


def test_stacked_grpc_retry_policy_warns() -> None:
    """A gRPC retryPolicy in the options warns: enabled it multiplies, disabled it is inert."""
    service_config = json.dumps({"methodConfig": [{"name": [{}], "retryPolicy": {
        "maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s",
        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})
    with pytest.warns(StackedRetriesWarning, match="multiply"):
        channel_options([("grpc.enable_retries", 1), ("grpc.service_config", service_config)],
                        ClientConfig())
    with pytest.warns(StackedRetriesWarning, match="inactive"):
        channel_options([("grpc.service_config", service_config)], ClientConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        channel_options([("grpc.service_config", json.dumps({"methodConfig": []}))],
                        ClientConfig())
    with pytest.raises(ValueError, match="once"):
        channel_options([("grpc.service_config", "{}")],
                        parse_config({"loadBalancingConfig": [{"pick_first": {}}]}))


def test_resilient_channels_warn_on_stacked_retries() -> None:
    """Both resilient_channel forms warn when gRPC's own retryPolicy is switched on too."""
    options = [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(
        {"methodConfig": [{"name": [{}], "hedgingPolicy": {"maxAttempts": 2}}]}))]
    with pytest.warns(StackedRetriesWarning):
        resilient_channel("127.0.0.1:1", options=options, registry=CollectorRegistry()).close()

    async def build() -> None:
        async with client_aio.resilient_channel("127.0.0.1:1", options=options,
                                                registry=CollectorRegistry()):
            pass

    import asyncio

    with pytest.warns(StackedRetriesWarning):
        asyncio.run(build())


# -- config on real channels --------------------------------------------------------------------
# The servers are the testing kit's: ``grpc_target`` serves a healthy backend with the octollm
# stack, and the plugin's ``fault_injector`` fails and counts the attempts.


@pytest.fixture
def grpc_handlers() -> Sequence[grpc.GenericRpcHandler]:
    """A healthy backend: every failure comes from the fault injector."""
    return [Backend([SUCCEED]).handler()]


@pytest.fixture
def down(fault_injector: FaultInjector) -> FaultInjector:
    """The plugin's fault injector, failing every attempt with UNAVAILABLE."""
    fault_injector.fail_next(EVERY_ATTEMPT, grpc.StatusCode.UNAVAILABLE)
    return fault_injector


def test_sync_config_sets_per_method_policies(grpc_target: str, down: FaultInjector,
                                              clock: FakeClock) -> None:
    """Sync: with the JSON config, Unary gets 4 attempts and Other none, as configured."""
    channel = sync_channel(grpc_target, clock, config=json.dumps(CONFIG), budget=None,
                           breaker=BreakerSettings(failure_threshold=100))
    with pytest.raises(errors.NetworkError):
        channel.unary_unary(UNARY)(b"x")
    with pytest.raises(errors.NetworkError):
        channel.unary_unary(OTHER)(b"x")
    assert down.count(UNARY) == 4 and down.count(OTHER) == 1
    assert all(d <= 0.5 for d in clock.sleeps)


async def test_aio_config_sets_per_method_policies(grpc_target: str, down: FaultInjector,
                                                   clock: FakeClock) -> None:
    """Aio: with the dict config, Unary gets 4 attempts and Other none, as configured."""
    async with aio_channel(grpc_target, clock, config=CONFIG, budget=None,
                           breaker=BreakerSettings(failure_threshold=100)) as channel:
        with pytest.raises(errors.NetworkError):
            await channel.unary_unary(UNARY)(b"x")
        with pytest.raises(errors.NetworkError):
            await channel.unary_unary(OTHER)(b"x")
    assert down.count(UNARY) == 4 and down.count(OTHER) == 1


def test_sync_config_passthrough_reaches_grpc(clock: FakeClock) -> None:
    """Sync: a methodConfig timeout in the config is applied by gRPC to the call."""
    stuck = threading.Event()
    # The injected delay waits on ``stuck``: the attempt hangs until the test lets it go.
    hang = FaultInjector(sleep=lambda seconds: stuck.wait(seconds))
    hang.delay_next(EVERY_ATTEMPT, 10)
    config = {"methodConfig": [{"name": [{"service": "test.Echo"}], "timeout": "0.05s",
                                "retryPolicy": {"maxAttempts": 2}}]}
    with serve(Backend([SUCCEED]).handler(), interceptors=[hang]) as target:
        try:
            with pytest.raises(errors.TimeoutError) as caught:
                sync_channel(target, clock, config=config).unary_unary(UNARY)(b"x")
        finally:
            stuck.set()
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # no caller timeout given
    assert hang.count() <= 1  # DEADLINE_EXCEEDED is not retried
    # The server saw the 0.05 s deadline (its clock reads it a little late, hence the slack).
    assert all(r.time_remaining is not None and r.time_remaining <= 0.1 for r in hang.records)


# -- the defaults ---------------------------------------------------------------------------------


def _default_sync(target: str, clock: FakeClock, registry: CollectorRegistry) -> grpc.Channel:
    return resilient_channel(target, clock=clock.now, sleep=clock.sleep, registry=registry)


def test_sync_defaults_retry_budget_and_shared_breaker(grpc_target: str, down: FaultInjector,
                                                       clock: FakeClock,
                                                       registry: CollectorRegistry) -> None:
    """Sync, no settings: 3 attempts; the target's budget and breaker are shared by channels."""
    with pytest.raises(errors.NetworkError):
        _default_sync(grpc_target, clock, registry).unary_unary(UNARY)(b"x")
    assert down.count() == 3
    other_channel = _default_sync(grpc_target, clock, registry)
    with pytest.raises(errors.NetworkError):
        other_channel.unary_unary(UNARY)(b"x")  # budget at half: one retry, then stop
    assert down.count() == 5  # the 5th consecutive failure opened the breaker
    with pytest.raises(errors.CircuitOpenError):
        _default_sync(grpc_target, clock, registry).unary_unary(UNARY)(b"x")
    assert down.count() == 5


async def test_aio_defaults_retry_budget_and_shared_breaker(grpc_target: str, down: FaultInjector,
                                                            clock: FakeClock,
                                                            registry: CollectorRegistry) -> None:
    """Aio, no settings: 3 attempts; the target's budget and breaker are shared by channels."""

    def make(target: str) -> grpc.aio.Channel:
        return client_aio.resilient_channel(target, clock=clock.now, sleep=clock.async_sleep,
                                            registry=registry)

    async with make(grpc_target) as first, make(grpc_target) as second:
        with pytest.raises(errors.NetworkError):
            await first.unary_unary(UNARY)(b"x")
        assert down.count() == 3
        with pytest.raises(errors.NetworkError):
            await second.unary_unary(UNARY)(b"x")
        assert down.count() == 5
        with pytest.raises(errors.CircuitOpenError):
            await first.unary_unary(UNARY)(b"x")
    assert down.count() == 5
