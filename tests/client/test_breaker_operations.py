"""Breakers operators can run: reset() and force_open() (log event + metric) on the channel
breaker and resilience.CircuitBreaker, listeners that hear each call's verdict, and per-target
registries bounded by LRU so many targets keep memory flat."""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc._core import budget as budget_module
from octollm_grpc._core.breaker import CircuitState
from octollm_grpc._core.budget import RetryBudget
from octollm_grpc.client import BreakerSettings, ChannelBreaker
from octollm_grpc.client import _breaker as breaker_module
from octollm_grpc.client._breaker import ChannelBreakers
from octollm_grpc.resilience import CircuitBreaker
from octollm_grpc.testing import FakeClock

_C = grpc.StatusCode


def _ops(registry: CollectorRegistry, target: str, operation: str) -> float | None:
    return registry.get_sample_value("octollm_client_circuit_operations_total",
                                     {"target": target, "method": "", "operation": operation})


def _state(registry: CollectorRegistry, target: str) -> float | None:
    return registry.get_sample_value("octollm_client_circuit_state",
                                     {"target": target, "method": ""})


def test_reset_closes_a_tripped_breaker_with_a_log_event_and_a_metric(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """reset(): OPEN -> CLOSED at once, failures forgotten, event and counter recorded."""
    breaker = ChannelBreaker("svc-a", BreakerSettings(failure_threshold=2), clock=clock.now,
                             registry=registry)
    for _ in range(2):
        breaker.record(breaker.acquire(), _C.UNAVAILABLE)
    assert breaker.state is CircuitState.OPEN
    with capture_logs() as logs:
        breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    assert _state(registry, "svc-a") == 0
    assert _ops(registry, "svc-a", "reset") == 1
    events = [event["event"] for event in logs]
    assert events == ["circuit_breaker_reset", "circuit_breaker_state_changed"]
    assert logs[0]["from_state"] == "open" and logs[0]["log_level"] == "info"
    # Failures were forgotten: one more failure does not trip a threshold of 2.
    breaker.record(breaker.acquire(), _C.UNAVAILABLE)
    assert breaker.state is CircuitState.CLOSED


def test_reset_of_a_closed_breaker_is_counted_but_changes_no_state(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """reset() on a closed breaker logs and counts it, with no state-change event."""
    breaker = ChannelBreaker("svc-b", BreakerSettings(failure_threshold=2), clock=clock.now,
                             registry=registry)
    breaker.record(breaker.acquire(), _C.UNAVAILABLE)
    with capture_logs() as logs:
        breaker.reset()
    assert [event["event"] for event in logs] == ["circuit_breaker_reset"]
    assert _ops(registry, "svc-b", "reset") == 1
    breaker.record(breaker.acquire(), _C.UNAVAILABLE)  # the earlier failure was forgotten
    assert breaker.state is CircuitState.CLOSED


def test_force_open_fails_calls_fast_for_the_given_time(
        clock: FakeClock, registry: CollectorRegistry) -> None:
    """force_open(10): CircuitOpenError with retry_after 10, half-open after 10 s."""
    breaker = ChannelBreaker("svc-c", clock=clock.now, registry=registry)
    with capture_logs() as logs:
        breaker.force_open(10)
    assert breaker.state is CircuitState.OPEN
    assert _state(registry, "svc-c") == 2
    assert _ops(registry, "svc-c", "force_open") == 1
    assert logs[0]["event"] == "circuit_breaker_forced_open"
    assert (logs[0]["log_level"], logs[0]["open_for"]) == ("warning", 10.0)
    with pytest.raises(errors.CircuitOpenError) as raised:
        breaker.acquire()
    assert raised.value.retry_after == 10
    clock.advance(10)
    assert breaker.state is CircuitState.HALF_OPEN


def test_force_open_forever_holds_until_reset(clock: FakeClock,
                                              registry: CollectorRegistry) -> None:
    """force_open(math.inf) stays open however long; reset() closes it."""
    breaker = ChannelBreaker("svc-d", clock=clock.now, registry=registry)
    breaker.force_open(math.inf)
    clock.advance(10**9)
    assert breaker.state is CircuitState.OPEN
    breaker.reset()
    breaker.record(breaker.acquire(), _C.OK)
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize("bad", [0, -1, True, "5"])
def test_force_open_refuses_a_bad_time(bad: Any, registry: CollectorRegistry) -> None:
    """force_open() takes a number of seconds > 0."""
    breaker = ChannelBreaker("svc-e", registry=registry)
    with pytest.raises(ValueError, match="open_for"):
        breaker.force_open(bad)
    assert breaker.state is CircuitState.CLOSED


def test_resilience_breaker_reset_and_force_open(clock: FakeClock,
                                                 registry: CollectorRegistry) -> None:
    """resilience.CircuitBreaker has the same operations, on the same metric."""
    breaker = CircuitBreaker(failure_threshold=1, timeout=30, name="http-x", clock=clock.now,
                             registry=registry)
    breaker.force_open(5)
    with pytest.raises(errors.CircuitOpenError):
        breaker.call_sync(lambda: "never")
    breaker.reset()
    assert breaker.call_sync(lambda: "ran") == "ran"
    assert (_ops(registry, "http-x", "force_open"), _ops(registry, "http-x", "reset")) == (1, 1)
    breaker.force_open()  # default: the breaker's own timeout
    clock.advance(29.9)
    assert breaker.state is CircuitState.OPEN
    clock.advance(0.1)
    assert breaker.state is CircuitState.HALF_OPEN


class _Recorder:
    def __init__(self) -> None:
        self.heard: list[str] = []

    def success(self, breaker: Any) -> None:
        self.heard.append("success")

    def failure(self, breaker: Any) -> None:
        self.heard.append("failure")

    def state_change(self, breaker: Any, old: CircuitState, new: CircuitState) -> None:
        self.heard.append(f"{old.value}->{new.value}")


def test_listeners_hear_each_call_and_state_change(clock: FakeClock,
                                                   registry: CollectorRegistry) -> None:
    """An object listener hears success, failure and changes; a plain callable only changes."""
    recorder, changes = _Recorder(), []
    breaker = ChannelBreaker("listened", BreakerSettings(failure_threshold=2), clock=clock.now,
                             registry=registry,
                             listeners=[recorder, lambda b, old, new: changes.append(new)])
    breaker.record(breaker.acquire(), _C.OK)
    breaker.record(breaker.acquire(), _C.UNAVAILABLE)
    breaker.record(breaker.acquire(), _C.NOT_FOUND)  # the server answered: a success
    breaker.record(breaker.acquire(), _C.CANCELLED)  # no verdict: nothing heard
    breaker.record(breaker.acquire(), _C.UNAVAILABLE)
    breaker.record(breaker.acquire(), _C.UNAVAILABLE)
    # The change a failure causes is announced before the failure itself.
    assert recorder.heard == ["success", "failure", "success", "failure", "closed->open",
                              "failure"]
    assert changes == [CircuitState.OPEN]


def test_a_broken_call_listener_is_logged_and_calls_go_on(clock: FakeClock,
                                                          registry: CollectorRegistry) -> None:
    """A success listener that raises costs a log line, not the call."""

    class Broken:
        def success(self, breaker: Any) -> None:
            raise RuntimeError("listener bug")

    breaker = ChannelBreaker("broken", clock=clock.now, registry=registry, listeners=[Broken()])
    with capture_logs() as logs:
        breaker.record(breaker.acquire(), _C.OK)
    assert [event["event"] for event in logs] == ["circuit_breaker_listener_failed"]
    assert breaker.state is CircuitState.CLOSED


def test_a_listener_must_be_callable_or_have_hooks(registry: CollectorRegistry) -> None:
    """add_listener refuses an object that can hear nothing."""
    with pytest.raises(TypeError, match="breaker listener"):
        ChannelBreaker("odd", registry=registry, listeners=[object()])


def test_shared_breaker_groups_are_lru_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_SHARED_TARGETS the least recently used group goes, with its metric series."""
    monkeypatch.setattr(breaker_module, "MAX_SHARED_TARGETS", 3)
    monkeypatch.setattr(ChannelBreakers, "_shared", type(ChannelBreakers._shared)())
    registry = CollectorRegistry()
    groups = {name: ChannelBreakers.for_target(name, registry=registry) for name in "abc"}
    for group in groups.values():
        group.for_method("").force_open(1)
    assert ChannelBreakers.for_target("a", registry=registry) is groups["a"]  # a: recent now
    ChannelBreakers.for_target("d", registry=registry)  # evicts b, the least recently used
    assert ChannelBreakers.for_target("a", registry=registry) is groups["a"]
    assert ChannelBreakers.for_target("c", registry=registry) is groups["c"]
    assert _state(registry, "b") is None and _ops(registry, "b", "force_open") is None
    assert _state(registry, "a") == 2
    fresh = ChannelBreakers.for_target("b", registry=registry)
    assert fresh is not groups["b"] and fresh.for_method("").state is CircuitState.CLOSED


def test_shared_budgets_are_lru_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_SHARED_TARGETS the least recently used budget goes; used ones stay."""
    monkeypatch.setattr(budget_module, "MAX_SHARED_TARGETS", 2)
    monkeypatch.setattr(RetryBudget, "_shared", type(RetryBudget._shared)())
    a, b = RetryBudget.for_target("a"), RetryBudget.for_target("b")
    a.on_failure()
    assert RetryBudget.for_target("a") is a
    RetryBudget.for_target("c")
    assert RetryBudget.for_target("a") is a and RetryBudget.for_target("b") is not b


def test_default_registry_bounds_are_documented_sizes() -> None:
    """Both registries keep 1,024 targets."""
    assert breaker_module.MAX_SHARED_TARGETS == budget_module.MAX_SHARED_TARGETS == 1024




def test_operation_events_name_the_breaker_and_the_change(clock: FakeClock,
                                                          registry: CollectorRegistry) -> None:
    """force_open then reset: each event has target, method, from_state; open_for only opening."""
    breaker = ChannelBreaker("svc-f", clock=clock.now, registry=registry, method="/s/M")
    with capture_logs() as logs:
        breaker.force_open(10)
        breaker.reset()
    picked = [(ev["event"], ev["target"], ev["method"], ev.get("from_state"),
               ev.get("to_state"), ev.get("open_for")) for ev in logs]
    assert picked == [
        ("circuit_breaker_forced_open", "svc-f", "/s/M", "closed", None, 10.0),
        ("circuit_breaker_state_changed", "svc-f", "/s/M", "closed", "open", 10.0),
        ("circuit_breaker_reset", "svc-f", "/s/M", "open", None, None),
        ("circuit_breaker_state_changed", "svc-f", "/s/M", "open", "closed", None),
    ]


def test_forget_removes_exactly_this_breakers_series(clock: FakeClock,
                                                     registry: CollectorRegistry) -> None:
    """forget(): state, rejected, transitions and operations of this breaker only."""
    gone = ChannelBreaker("gone", BreakerSettings(failure_threshold=1), clock=clock.now,
                          registry=registry)
    kept = ChannelBreaker("kept", BreakerSettings(failure_threshold=1), clock=clock.now,
                          registry=registry)
    for breaker in (gone, kept):
        breaker.record(breaker.acquire(), _C.UNAVAILABLE)
        with pytest.raises(errors.CircuitOpenError):
            breaker.acquire()
        breaker.reset()

    def series(target: str) -> list[float | None]:
        labels = {"target": target, "method": ""}
        sample = registry.get_sample_value
        return [sample("octollm_client_circuit_state", labels),
                sample("octollm_client_circuit_rejected_total", labels),
                sample("octollm_client_circuit_transitions_total",
                       {**labels, "from_state": "closed", "to_state": "open"}),
                sample("octollm_client_circuit_transitions_total",
                       {**labels, "from_state": "open", "to_state": "closed"}),
                sample("octollm_client_circuit_operations_total",
                       {**labels, "operation": "reset"})]

    assert series("gone") == series("kept") == [0, 1, 1, 1, 1]
    gone.forget()
    assert series("gone") == [None] * 5
    assert series("kept") == [0, 1, 1, 1, 1]


def test_listeners_get_the_breaker_and_failures_name_it(clock: FakeClock,
                                                        registry: CollectorRegistry) -> None:
    """Call listeners receive the breaker itself; a failing one is logged with its target."""
    seen: list[Any] = []

    class Hooks:
        def success(self, breaker: Any) -> None:
            seen.append(breaker)

        def failure(self, breaker: Any) -> None:
            raise RuntimeError("listener bug")

    breaker = ChannelBreaker("named", clock=clock.now, registry=registry, listeners=[Hooks()])
    breaker.record(breaker.acquire(), _C.OK)
    with capture_logs() as logs:
        breaker.record(breaker.acquire(), _C.UNAVAILABLE)
    assert seen == [breaker]
    assert [(ev["event"], ev["target"]) for ev in logs] == [
        ("circuit_breaker_listener_failed", "named")]
