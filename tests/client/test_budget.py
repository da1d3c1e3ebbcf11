"""Retry budgets (gRFC A6's token bucket) and the per-target sharing of budgets and breaker
groups, without a network."""

from __future__ import annotations

import threading

import grpc
import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc.client import (
    BreakerSettings,
    RetryBudget,
)
from octollm_grpc.client._breaker import ChannelBreakers
from octollm_grpc.testing import FakeClock
from tests.client.breakers import HALF_OPEN, OPEN
from tests.client.breakers import fail as _fail

_C = grpc.StatusCode


# -- retry budget ------------------------------------------------------------------------------


def test_budget_takes_tokens_and_stops_retries_below_half() -> None:
    """Failures take a token each; retries stop at half the tokens; successes refill by ratio."""
    budget = RetryBudget(max_tokens=4, token_ratio=0.5)
    assert budget.on_failure() is True  # 3 > 2
    assert budget.on_failure() is False  # 2 is not above half
    assert not budget.allows_retry()
    budget.on_success()
    assert budget.tokens == 2.5 and budget.allows_retry()
    for _ in range(10):
        budget.on_success()
    assert budget.tokens == 4


def test_budget_validates_and_is_shared_per_target_and_settings() -> None:
    """A6 limits are enforced; for_target returns one bucket per (target, settings)."""
    for bad in ({"max_tokens": 0}, {"max_tokens": 1001}, {"token_ratio": -1},
                {"max_tokens": 1, "token_ratio": 2}):
        with pytest.raises(ValueError):
            RetryBudget(**bad)  # type: ignore[arg-type]
    first = RetryBudget.for_target("core-test:1")
    assert RetryBudget.for_target("core-test:1") is first
    assert RetryBudget.for_target("core-test:1", max_tokens=20) is not first
    assert RetryBudget.for_target("core-test:2") is not first


def test_budget_is_exact_under_concurrent_failures() -> None:
    """Threads failing at once: exactly max_tokens/2 - 1 of them are allowed to retry."""
    budget = RetryBudget(max_tokens=100, token_ratio=0.1)
    allowed: list[bool] = []
    lock = threading.Lock()

    def fail() -> None:
        result = budget.on_failure()
        with lock:
            allowed.append(result)

    threads = [threading.Thread(target=fail) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert allowed.count(True) == 49
    assert budget.tokens == 0


# -- breaker groups and budgets shared per target --------------------------------------------


def test_for_target_shares_a_group_per_target_and_settings(clock: FakeClock) -> None:
    """Same target and settings: one group; other settings, target, clock or registry: another."""
    registry = CollectorRegistry()
    settings = BreakerSettings(failure_threshold=2)
    group = ChannelBreakers.for_target("share:1", settings, clock=clock.now, registry=registry)
    assert ChannelBreakers.for_target("share:1", BreakerSettings(failure_threshold=2),
                                      clock=clock.now, registry=registry) is group
    assert group.target == "share:1" and group.settings is settings
    others = [
        ChannelBreakers.for_target("share:1", BreakerSettings(failure_threshold=3),
                                   clock=clock.now, registry=registry),
        ChannelBreakers.for_target("share:2", settings, clock=clock.now, registry=registry),
        ChannelBreakers.for_target("share:1", settings, clock=FakeClock().now,
                                   registry=registry),
        ChannelBreakers.for_target("share:1", settings, clock=clock.now,
                                   registry=CollectorRegistry()),
    ]
    assert all(other is not group for other in others)
    assert others[0].settings.failure_threshold == 3
    breaker = group.for_method("/s/A")
    breaker.on_failure(breaker.acquire())
    breaker.on_failure(breaker.acquire())
    assert breaker.state is OPEN  # the group's own settings, clock and registry are used
    assert registry.get_sample_value("octollm_client_circuit_state",
                                     {"target": "share:1", "method": ""}) == OPEN.gauge
    clock.advance(30)
    assert breaker.state is HALF_OPEN  # on the group's (fake) clock


def test_per_method_groups_keep_one_breaker_per_method(clock: FakeClock) -> None:
    """per_method: each method has its own breaker, labelled with the method, made once."""
    seen: list[str] = []
    group = ChannelBreakers("pm:1", BreakerSettings(failure_threshold=1, per_method=True),
                            clock=clock.now, registry=CollectorRegistry(),
                            listeners=[lambda b, old, new: seen.append(b.method)])
    first = group.for_method("/s/A")
    assert group.for_method("/s/A") is first
    assert first.method == "/s/A" and first.target == "pm:1"
    assert group.for_method("/s/B") is not first
    _fail(first)
    assert seen == ["/s/A"]  # the group's listeners reach its breakers
    clock.advance(30)
    assert first.state is HALF_OPEN  # on the group's (fake) clock


def test_budget_for_target_keeps_its_settings() -> None:
    """for_target builds the budget with the settings asked for, ratio included."""
    budget = RetryBudget.for_target("budget:1", max_tokens=6, token_ratio=0.5)
    assert (budget.max_tokens, budget.token_ratio, budget.tokens) == (6, 0.5, 6)
    assert RetryBudget.for_target("budget:1", 6, 0.5) is budget
    assert RetryBudget.for_target("budget:1", 6, 0.25) is not budget
    assert RetryBudget.for_target("budget:1", 6, 0.25).token_ratio == 0.25
    assert repr(budget) == "RetryBudget(max_tokens=6, token_ratio=0.5, tokens=6)"


def test_budget_defaults_are_a6s() -> None:
    """10 tokens and a 0.1 ratio, for a budget made directly or per target."""
    assert (RetryBudget().max_tokens, RetryBudget().token_ratio) == (10, 0.1)
    shared = RetryBudget.for_target("budget:defaults")
    assert (shared.max_tokens, shared.token_ratio, shared.tokens) == (10, 0.1, 10)
    assert RetryBudget.for_target("budget:defaults", 10, 0.1) is shared


def test_budget_threshold_is_strictly_above_half() -> None:
    """Exactly half the tokens left stops retries; a success refills by the ratio."""
    budget = RetryBudget(max_tokens=3, token_ratio=1)
    assert budget.allows_retry()
    assert budget.on_failure() is True  # 2 > 1.5
    assert budget.allows_retry()
    assert budget.on_failure() is False  # 1 is not above 1.5
    assert budget.tokens == 1
    budget.on_success()
    assert budget.tokens == 2 and budget.allows_retry()
    budget.on_success()
    budget.on_success()
    assert budget.tokens == 3
    for _ in range(5):
        budget.on_failure()
    assert budget.tokens == 0  # never below zero
    exact = RetryBudget(max_tokens=4, token_ratio=0.5)
    exact.on_failure()
    exact.on_failure()
    assert exact.tokens == 2 and not exact.allows_retry()


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"max_tokens": True}, TypeError, "max_tokens must be a number, not True"),
    ({"token_ratio": "1"}, TypeError, "token_ratio must be a number, not '1'"),
    ({"max_tokens": float("inf")}, ValueError, "max_tokens must be a finite number > 0, not inf"),
    ({"token_ratio": 0}, ValueError, "token_ratio must be a finite number > 0, not 0"),
    ({"max_tokens": 1000.5}, ValueError, "max_tokens must be <= 1000 (gRFC A6), not 1000.5"),
    ({"max_tokens": 2, "token_ratio": 2.5}, ValueError, "token_ratio must not exceed max_tokens"),
])
def test_budget_rejects_with_a_message(kwargs: dict[str, object], error: type[Exception],
                                       message: str) -> None:
    """Each invalid budget setting is refused with a message naming it (the whole message)."""
    with pytest.raises(error) as caught:
        RetryBudget(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_budget_accepts_the_edge_values() -> None:
    """1000 tokens, a ratio equal to max_tokens, tiny positive values: all accepted."""
    assert RetryBudget(max_tokens=1000).max_tokens == 1000
    assert RetryBudget(max_tokens=2, token_ratio=2).token_ratio == 2
    assert RetryBudget(max_tokens=0.01, token_ratio=0.01).tokens == 0.01
