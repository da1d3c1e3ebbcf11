"""hedgingPolicy in config: parsed as gRFC A6 says, refused when wrong, looked up per method."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from octollm_grpc.client import HedgingPolicies, HedgingPolicy, parse_config

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
