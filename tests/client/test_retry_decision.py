"""The per-call retry decision without a network: budget and deadline stops, pushback, the
backoff exponent, the plan's breaker, and each attempt's timeout."""

from __future__ import annotations

import random

import grpc
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.client import (
    BreakerSettings,
    ChannelBreaker,
    RetryBudget,
    RetryPolicies,
    RetryPolicy,
)
from octollm_grpc.client._breaker import ChannelBreakers
from octollm_grpc.client._resilience import CallRetry, Resilience
from octollm_grpc.status._limits import PUSHBACK_KEY
from octollm_grpc.testing import FakeClock
from tests.client.breakers import CLOSED

_C = grpc.StatusCode


# -- the per-call retry decision -----------------------------------------------------------------


def _retry(clock: FakeClock, policy: RetryPolicy, budget: RetryBudget | None = None,
           timeout: float | None = None) -> CallRetry:
    core = Resilience(retry=RetryPolicies(policy), budget=budget, breakers=None,
                      clock=clock.now, rng=random.Random(3))
    return CallRetry(core, core.plan("/s/M"), timeout, clock.now())


def test_budget_throttle_stops_retries_and_logs(clock: FakeClock) -> None:
    """When the budget is at half, the next failure is not retried and a warning is logged."""
    budget = RetryBudget(max_tokens=2, token_ratio=0.1)
    retry = _retry(clock, RetryPolicy(max_attempts=5), budget)
    with capture_logs() as logs:
        assert retry.next_delay(_C.UNAVAILABLE, None) is None
    assert [e["event"] for e in logs] == ["rpc_retry_throttled"]
    assert logs[0]["log_level"] == "warning"


def test_delay_that_would_cross_the_deadline_stops(clock: FakeClock) -> None:
    """A pushback longer than the time left ends the call instead of sleeping past it."""
    retry = _retry(clock, RetryPolicy(max_attempts=5), timeout=1.0)
    assert retry.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "1500"),)) is None
    assert retry.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "500"),)) == 0.5
    assert retry.attempts == 2


def test_pushback_restarts_the_backoff_exponent(clock: FakeClock) -> None:
    """After a server pushback, the next jittered delay uses the initial backoff again."""
    policy = RetryPolicy(max_attempts=10, initial_backoff=1, max_backoff=100,
                         backoff_multiplier=10)
    retry = _retry(clock, policy)
    for _ in range(2):
        assert retry.next_delay(_C.UNAVAILABLE, None) is not None
    assert retry.retries_backoff == 2
    assert retry.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "5"),)) == 0.005
    delay = retry.next_delay(_C.UNAVAILABLE, None)
    assert delay is not None and delay <= 1.0

# -- the retry decision and the plan --------------------------------------------------------


def _call(clock: FakeClock, policy: RetryPolicy | None, budget: RetryBudget | None = None,
          timeout: float | None = None,
          breakers: ChannelBreakers | ChannelBreaker | None = None) -> CallRetry:
    core = Resilience(retry=RetryPolicies(policy) if policy else None, budget=budget,
                      breakers=breakers, clock=clock.now, rng=random.Random(3))
    return CallRetry(core, core.plan("/s/M"), timeout, clock.now())


def test_retry_events_are_exact(clock: FakeClock) -> None:
    """rpc_retry carries method, attempt, code, delay and whether the server set it."""
    retry = _call(clock, RetryPolicy(max_attempts=3, initial_backoff=1, max_backoff=1))
    expected = random.Random(3).uniform(0, 1)
    with capture_logs() as logs:
        assert retry.next_delay(_C.UNAVAILABLE, None) == expected
        assert retry.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "700"),)) == 0.7
        assert retry.next_delay(_C.UNAVAILABLE, None) is None  # max_attempts reached
    assert logs == [
        {"event": "rpc_retry", "log_level": "info", "method": "/s/M", "attempt": 2,
         "code": "UNAVAILABLE", "delay": expected, "server_pushback": False},
        {"event": "rpc_retry", "log_level": "info", "method": "/s/M", "attempt": 3,
         "code": "UNAVAILABLE", "delay": 0.7, "server_pushback": True},
    ]
    assert retry.attempts == 3


def test_stop_and_abandon_events_are_exact(clock: FakeClock) -> None:
    """The server's "do not retry" and a wait past the deadline end the call, logged."""
    stopped = _call(clock, RetryPolicy(max_attempts=3))
    abandoned = _call(clock, RetryPolicy(max_attempts=3), timeout=2.0)
    throttled = _call(clock, RetryPolicy(max_attempts=3), RetryBudget(max_tokens=1))
    with capture_logs() as logs:
        assert stopped.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "-1"),)) is None
        assert abandoned.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "2000"),)) is None
        assert throttled.next_delay(_C.UNAVAILABLE, None) is None
    assert logs == [
        {"event": "rpc_retry_stopped_by_server", "log_level": "info", "method": "/s/M",
         "attempt": 1, "code": "UNAVAILABLE"},
        {"event": "rpc_retry_abandoned_deadline", "log_level": "info", "method": "/s/M",
         "attempt": 1, "code": "UNAVAILABLE", "delay": 2.0},
        {"event": "rpc_retry_throttled", "log_level": "warning", "method": "/s/M",
         "attempt": 1, "code": "UNAVAILABLE"},
    ]
    assert (stopped.attempts, abandoned.attempts, throttled.attempts) == (1, 1, 1)


def test_a_wait_just_inside_the_deadline_is_taken(clock: FakeClock) -> None:
    """A pushback ending before the deadline is waited; one ending at it is not."""
    inside = _call(clock, RetryPolicy(max_attempts=3), timeout=2.0)
    clock.advance(0.5)
    assert inside.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "1499"),)) == 1.499
    at = _call(clock, RetryPolicy(max_attempts=3), timeout=2.0)
    clock.advance(0.5)
    assert at.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "1500"),)) is None


def test_budget_token_is_taken_even_when_the_call_then_stops(clock: FakeClock) -> None:
    """A6: a retryable failure takes a token even at max_attempts or on the server's stop."""
    budget = RetryBudget(max_tokens=10)
    last = _call(clock, RetryPolicy(max_attempts=1), budget)
    assert last.next_delay(_C.UNAVAILABLE, None) is None
    stop = _call(clock, RetryPolicy(max_attempts=3), budget)
    assert stop.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "x"),)) is None
    assert budget.tokens == 8
    plain = _call(clock, RetryPolicy(max_attempts=3), budget)
    assert plain.next_delay(_C.INVALID_ARGUMENT, None) is None  # not retryable: no token
    assert budget.tokens == 8


def test_pushback_codes_retry_only_with_the_servers_word(clock: FakeClock) -> None:
    """RESOURCE_EXHAUSTED: retried after the server's delay, not without one; never retried
    codes (CANCELLED) and calls without a policy never."""
    policy = RetryPolicy(max_attempts=5)
    assert _call(clock, policy).next_delay(_C.RESOURCE_EXHAUSTED, None) is None
    assert _call(clock, policy).next_delay(
        _C.RESOURCE_EXHAUSTED, ((PUSHBACK_KEY, "100"),)) == 0.1
    assert _call(clock, policy).next_delay(
        _C.RESOURCE_EXHAUSTED, ((PUSHBACK_KEY, "-1"),)) is None
    assert _call(clock, policy).next_delay(_C.INVALID_ARGUMENT, ((PUSHBACK_KEY, "1"),)) is None
    assert _call(clock, policy).next_delay(_C.CANCELLED, None) is None
    assert _call(clock, None).next_delay(_C.UNAVAILABLE, None) is None


def test_backoff_exponent_grows_per_retry(clock: FakeClock) -> None:
    """The n-th jittered retry draws from [0, initial * multiplier^(n-1)]."""
    policy = RetryPolicy(max_attempts=4, initial_backoff=1, backoff_multiplier=10,
                         max_backoff=1000)
    retry = _call(clock, policy)
    twin = random.Random(3)
    assert [retry.next_delay(_C.UNAVAILABLE, None) for _ in range(3)] == [
        twin.uniform(0, 1), twin.uniform(0, 10), twin.uniform(0, 100)]
    assert retry.retries_backoff == 3


def test_plan_uses_a_plain_breaker_or_the_groups_per_method(clock: FakeClock) -> None:
    """A single ChannelBreaker guards every method; a group gives each its own when per_method."""
    registry = CollectorRegistry()
    single = ChannelBreaker("plan:1", clock=clock.now, registry=registry)
    core = Resilience(retry=None, budget=None, breakers=single)
    assert core.plan("/s/A").breaker is single and core.plan(b"/s/B").breaker is single
    group = ChannelBreakers("plan:2", BreakerSettings(per_method=True), clock=clock.now,
                            registry=registry)
    budget = RetryBudget()
    core = Resilience(retry=RetryPolicies(RetryPolicy(max_attempts=2)), budget=budget,
                      breakers=group)
    a, b = core.plan("/s/A"), core.plan(b"/s/B")
    assert a.breaker is group.for_method("/s/A") and b.breaker is group.for_method("/s/B")
    assert a.breaker is not b.breaker
    assert (a.method, b.method) == ("/s/A", "/s/B")
    assert a.policy == RetryPolicy(max_attempts=2) and a.budget is budget
    assert core.plan("/s/A") is a  # cached
    none = Resilience(retry=None, budget=None, breakers=None).plan("/s/A")
    assert none.breaker is None and none.policy is None and none.acquire() == 0
    none.succeeded(0)  # nothing to record


def test_plan_acquire_asks_the_breaker(clock: FakeClock) -> None:
    """An attempt's token comes from the breaker: an open one refuses the attempt."""
    breaker = ChannelBreaker("plan:4", BreakerSettings(failure_threshold=1), clock=clock.now,
                             registry=CollectorRegistry())
    plan = Resilience(retry=None, budget=None, breakers=breaker).plan("/s/M")
    breaker.on_failure(plan.acquire())
    with pytest.raises(errors.CircuitOpenError):
        plan.acquire()


def test_default_random_source_draws_the_jitter(clock: FakeClock) -> None:
    """Without rng=, a Random of the core's own draws the delays."""
    core = Resilience(retry=RetryPolicies(RetryPolicy(max_attempts=2, initial_backoff=1,
                                                      max_backoff=1)),
                      budget=None, breakers=None, clock=clock.now)
    assert isinstance(core.rng, random.Random)
    delay = CallRetry(core, core.plan("/s/M"), None, clock.now()).next_delay(_C.UNAVAILABLE, None)
    assert delay is not None and 0 <= delay <= 1


def test_a_first_attempt_under_the_callers_deadline_is_not_capped(clock: FakeClock) -> None:
    """A retry state made after the first attempt (no cap ran) never retries its
    DEADLINE_EXCEEDED: the caller's own deadline had passed."""
    retry = _call(clock, RetryPolicy(max_attempts=3), timeout=10.0)
    assert retry.capped is False
    assert retry.next_delay(_C.DEADLINE_EXCEEDED, None) is None


def test_attempt_timeout_without_a_policy_is_what_is_left(clock: FakeClock) -> None:
    """A method without a retry policy: no cap, the caller's remaining time."""
    retry = _call(clock, None, timeout=5.0)
    clock.advance(2)
    assert retry.attempt_timeout() == pytest.approx(3.0) and retry.capped is False


def test_plan_records_success_with_breaker_and_budget(clock: FakeClock) -> None:
    """MethodPlan.succeeded() reports to the breaker (resetting its count) and the budget."""
    breaker = ChannelBreaker("plan:3", BreakerSettings(failure_threshold=2), clock=clock.now,
                             registry=CollectorRegistry())
    budget = RetryBudget(max_tokens=4, token_ratio=1)
    budget.on_failure()
    plan = Resilience(retry=None, budget=budget, breakers=breaker).plan("/s/M")
    breaker.on_failure(plan.acquire())
    plan.succeeded(plan.acquire())
    breaker.on_failure(plan.acquire())
    assert breaker.state is CLOSED  # the success in between reset the count
    assert budget.tokens == 4


# -- the attempt timeout (tests/client/test_deadlines.py checks it on the wire) ---------------


def _capped_retry(clock: FakeClock, cap: float | None, timeout: float | None) -> CallRetry:
    return _call(clock, RetryPolicy(max_attempts=5, per_attempt_timeout=cap), timeout=timeout)


def test_attempt_timeout_is_the_cap_without_a_caller_timeout(clock: FakeClock) -> None:
    """No caller deadline: the cap every time (and the attempt counts as capped)."""
    retry = _capped_retry(clock, 2.5, None)
    assert retry.deadline is None
    for _ in range(2):
        assert retry.attempt_timeout() == 2.5
        assert retry.capped is True
        clock.advance(100)
    plain = _capped_retry(clock, None, None)
    assert plain.attempt_timeout() is None
    assert plain.capped is False


def test_attempt_timeout_is_what_is_left_of_the_deadline_capped(clock: FakeClock) -> None:
    """With a deadline: min(cap, deadline - now); zero or less once it has passed."""
    retry = _capped_retry(clock, 3.0, 10.0)
    assert retry.deadline == clock.now() + 10.0
    assert retry.attempt_timeout() == 3.0 and retry.capped is True
    clock.advance(7.0)
    assert retry.attempt_timeout() == pytest.approx(3.0) and retry.capped is False  # cap == left
    clock.advance(1.5)
    assert retry.attempt_timeout() == pytest.approx(1.5) and retry.capped is False
    clock.advance(2.5)
    assert retry.attempt_timeout() == pytest.approx(-1.0)
    uncapped = _capped_retry(clock, None, 4.0)
    clock.advance(1.0)
    assert uncapped.attempt_timeout() == pytest.approx(3.0) and uncapped.capped is False


def test_deadline_exceeded_is_retried_only_when_the_cap_cut_the_attempt(clock: FakeClock) -> None:
    """DEADLINE_EXCEEDED is retried after a capped attempt, never after the caller's own."""
    capped = _capped_retry(clock, 1.0, 10.0)
    capped.attempt_timeout()
    assert capped.next_delay(grpc.StatusCode.DEADLINE_EXCEEDED, None) is not None
    assert capped.attempts == 2
    equal = _capped_retry(clock, 10.0, 10.0)  # the cap is the caller's whole time: not a cap
    equal.attempt_timeout()
    assert equal.next_delay(grpc.StatusCode.DEADLINE_EXCEEDED, None) is None
    callers = _capped_retry(clock, None, 10.0)
    callers.attempt_timeout()
    assert callers.next_delay(grpc.StatusCode.DEADLINE_EXCEEDED, None) is None
