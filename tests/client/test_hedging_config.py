"""hedgingPolicy: parsed as gRFC A6 says, refused when wrong, looked up per method; and the
per-call decisions of a hedged call (budget, pushback, deadline), without a network."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from octollm_grpc.client import RetryBudget
from octollm_grpc.client._config import parse_config
from octollm_grpc.client._hedging import HedgeRace, HedgingPolicies, HedgingPolicy
from octollm_grpc.status._limits import PUSHBACK_KEY
from octollm_grpc.testing import FakeClock

NAME = [{"service": "test.Hedge"}]


def _hedged(policy: dict[str, Any], name: list[dict[str, str]] = NAME) -> dict[str, Any]:
    return {"methodConfig": [{"name": name, "hedgingPolicy": policy}]}


def test_the_three_fields_are_parsed() -> None:
    """maxAttempts, hedgingDelay (a duration) and nonFatalStatusCodes (names or numbers)."""
    config = parse_config(_hedged({"maxAttempts": 3, "hedgingDelay": "0.25s",
                                   "nonFatalStatusCodes": ["UNAVAILABLE", 13]}))
    assert config.hedging is not None
    policy = config.hedging.policy_for("/test.Hedge/Unary")
    assert policy == HedgingPolicy(max_attempts=3, hedging_delay=0.25, non_fatal_codes=frozenset(
        {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL}))
    assert config.retry.policy_for("/test.Hedge/Unary") is None  # hedged, so never retried


def test_delay_and_codes_default_as_a6_says() -> None:
    """Without hedgingDelay every attempt goes at once; without codes every failure is fatal."""
    config = parse_config(_hedged({"maxAttempts": 2}))
    assert config.hedging is not None
    assert config.hedging.policy_for("/test.Hedge/M") == HedgingPolicy(2, 0.0, frozenset())


def test_max_attempts_above_five_is_five() -> None:
    """A6: maxAttempts over 5 is treated as 5."""
    assert HedgingPolicy(max_attempts=9).max_attempts == 5


@pytest.mark.parametrize(("policy", "message"), [
    ({}, "maxAttempts is required"),
    ({"maxAttempts": 1}, ">= 2"),
    ({"maxAttempts": 2, "hedgingDelay": "-1s"}, "hedgingDelay"),
    ({"maxAttempts": 2, "nonFatalStatusCodes": ["CANCELLED"]}, "CANCELLED"),
    ({"maxAttempts": 2, "nonFatalStatusCodes": ["NOPE"]}, "NOPE"),
    ({"maxAttempts": "2"}, "max_attempts must be an int"),
])
def test_wrong_policies_are_refused(policy: dict[str, Any], message: str) -> None:
    """Each mistake is a ValueError that says what is wrong."""
    with pytest.raises(ValueError, match=message):
        parse_config(_hedged(policy))


def test_both_policies_on_one_method_are_refused() -> None:
    """A6: a method is either retried or hedged."""
    with pytest.raises(ValueError, match="both retryPolicy and hedgingPolicy"):
        parse_config({"methodConfig": [{"name": NAME, "retryPolicy": {"maxAttempts": 2},
                                        "hedgingPolicy": {"maxAttempts": 2}}]})


def test_a_method_entry_hides_its_services_hedging() -> None:
    """The most specific entry wins: a method configured without hedging is not hedged."""
    config = parse_config({"methodConfig": [
        {"name": NAME, "hedgingPolicy": {"maxAttempts": 2}},
        {"name": [{"service": "test.Hedge", "method": "Create"}],
         "retryPolicy": {"maxAttempts": 2}},
    ]})
    assert config.hedging is not None
    assert config.hedging.policy_for("/test.Hedge/Get") is not None
    assert config.hedging.policy_for("/test.Hedge/Create") is None
    assert config.retry.policy_for("/test.Hedge/Create") is not None


def test_a_default_entry_hedges_every_method() -> None:
    """A name {} with hedgingPolicy hedges methods no other entry names."""
    config = parse_config(_hedged({"maxAttempts": 2}, name=[{}]))
    assert config.hedging is not None
    assert config.hedging.policy_for("/any.Service/Method") == HedgingPolicy(2)


def test_no_hedging_entry_means_no_hedging_policies() -> None:
    """A config without hedgingPolicy leaves every method unhedged (hedging is None)."""
    assert parse_config({"methodConfig": [{"name": NAME,
                                           "retryPolicy": {"maxAttempts": 2}}]}).hedging is None
    assert HedgingPolicies().policy_for("/a.B/C") is None


# -- the race's decisions, without a network ---------------------------------------------------

class _Counters:
    def __init__(self) -> None:
        self.hedges = _Count()
        self.throttled = _Count()


class _Count:
    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


def _race(budget: RetryBudget | None, max_attempts: int = 5,
          timeout: float | None = None) -> tuple[HedgeRace, _Counters, FakeClock]:
    clock = FakeClock()
    counters = _Counters()
    race = HedgeRace(HedgingPolicy(max_attempts, 0.1, frozenset({grpc.StatusCode.UNAVAILABLE})),
                     method="/test.Hedge/M", budget=budget, metrics=counters, clock=clock.now,
                     timeout=timeout, start=clock.now())
    return race, counters, clock


def test_slow_attempts_spend_the_budget_without_failing() -> None:
    """Hedges of slow (not failed) attempts take a token each and stop at half the bucket."""
    budget = RetryBudget(max_tokens=4, token_ratio=0.1)
    race, counters, _ = _race(budget)
    with capture_logs() as logs:
        assert race.take_hedge("delay") == 1
        assert race.take_hedge("delay") == 2
        assert race.take_hedge("delay") is None
        assert race.take_hedge("delay") is None  # stopped: no second throttle count
    assert budget.tokens == 2
    assert (counters.hedges.value, counters.throttled.value) == (2, 1)
    assert [e["event"] for e in logs].count("rpc_hedge_throttled") == 1


def test_non_fatal_failures_take_a_token_and_fatal_ones_end_the_race() -> None:
    """UNAVAILABLE (non-fatal) takes a token and lets the race go on; INTERNAL ends it."""
    budget = RetryBudget(max_tokens=10, token_ratio=0.1)
    race, _, _ = _race(budget)
    assert race.failed(grpc.StatusCode.UNAVAILABLE, ()) is False
    assert budget.tokens == 9
    assert race.gave_up()  # nothing in flight and no hedge asked for
    race, _, _ = _race(budget)
    assert race.failed(grpc.StatusCode.INTERNAL, ()) is True
    assert budget.tokens == 9 and race.done


def test_pushback_stops_hedges_and_max_attempts_bounds_them() -> None:
    """Any pushback value stops hedges; without it, max_attempts bounds them."""
    race, _, _ = _race(None)
    race.failed(grpc.StatusCode.UNAVAILABLE, ((PUSHBACK_KEY, "5"),))
    assert race.take_hedge("UNAVAILABLE") is None and not race.may_hedge()
    race, _, _ = _race(None, max_attempts=2)
    assert race.take_hedge("delay") == 1
    assert race.take_hedge("delay") is None


def test_no_hedge_once_the_callers_deadline_has_passed() -> None:
    """A hedge due after the caller's deadline is not sent; before it, its timeout is the rest."""
    race, _, clock = _race(None, timeout=1.0)
    clock.advance(0.4)
    assert race.attempt_timeout() == pytest.approx(0.6)
    assert race.take_hedge("delay") == 1
    clock.advance(0.6)
    assert race.take_hedge("delay") is None
