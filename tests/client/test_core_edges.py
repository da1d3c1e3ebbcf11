"""Edges of the shared client core that a mutation run found unpinned (no network).

Breaker transitions at their exact thresholds, stale and late reports, the sliding window over
several laps; budgets and breaker groups shared per target; out-of-range server delays; the
accepted boundary values of every setting; the events and messages callers and operators see.
"""

from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc._core.backoff import MAX_PUSHBACK, STOP, full_jitter, server_delay
from octollm_grpc._core.breaker import HALF_OPEN_RETRY_AFTER
from octollm_grpc.client import (
    BreakerSettings,
    ChannelBreaker,
    CircuitState,
    RetryBudget,
    RetryPolicies,
    RetryPolicy,
)
from octollm_grpc.client._breaker import DEFAULT_FAILURE_CODES, ChannelBreakers
from octollm_grpc.client._resilience import CallRetry, Resilience
from octollm_grpc.status._limits import DETAILS_KEY, PUSHBACK_KEY
from octollm_grpc.testing import FakeClock

_C = grpc.StatusCode
CLOSED, HALF_OPEN, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN


def _breaker(clock: FakeClock, registry: CollectorRegistry | None = None,
             **settings: object) -> ChannelBreaker:
    return ChannelBreaker("edge:1", BreakerSettings(**settings),  # type: ignore[arg-type]
                          method="/s/M", clock=clock.now, registry=registry or CollectorRegistry())


def _fail(breaker: ChannelBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.on_failure(breaker.acquire())


def _succeed(breaker: ChannelBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.on_success(breaker.acquire())


# -- breaker: counting while closed ----------------------------------------------------------


def test_a_success_after_exactly_one_failure_resets_the_count(clock: FakeClock) -> None:
    """fail, succeed, fail with a threshold of 2: the success restarted the count: closed."""
    breaker = _breaker(clock, failure_threshold=2)
    _fail(breaker)
    _succeed(breaker)
    _fail(breaker)
    assert breaker.state is CLOSED
    _fail(breaker)
    assert breaker.state is OPEN


def test_the_threshold_is_reached_exactly(clock: FakeClock) -> None:
    """threshold - 1 failures keep it closed; the threshold-th opens it."""
    breaker = _breaker(clock, failure_threshold=3)
    _fail(breaker, 2)
    assert breaker.state is CLOSED
    _fail(breaker)
    assert breaker.state is OPEN


def test_rate_trips_exactly_at_minimum_calls(clock: FakeClock) -> None:
    """With minimum_calls 4 and a 0.5 rate, 2 failures of 4 calls trip; of 3 calls they don't."""
    breaker = _breaker(clock, failure_threshold=None, failure_rate_threshold=0.5,
                       window_size=8, minimum_calls=4)
    _succeed(breaker)
    _fail(breaker, 2)  # 2 of 3: over the rate, but under minimum_calls
    assert breaker.state is CLOSED
    _succeed(breaker)  # 2 of 4: a success never trips
    assert breaker.state is CLOSED
    _fail(breaker)  # 3 of 5
    assert breaker.state is OPEN


def test_rate_just_under_the_threshold_stays_closed(clock: FakeClock) -> None:
    """1 failure in 4 calls is 0.25 < 0.3: closed; the count also trips on its own."""
    breaker = _breaker(clock, failure_threshold=None, failure_rate_threshold=0.3,
                       window_size=4, minimum_calls=4)
    _succeed(breaker, 3)
    _fail(breaker)
    assert breaker.state is CLOSED
    both = _breaker(clock, failure_threshold=2, failure_rate_threshold=1.0,
                    window_size=10, minimum_calls=10)
    _fail(both, 2)  # the rate never reaches minimum_calls; the consecutive count trips
    assert both.state is OPEN


def test_sliding_window_wraps_more_than_once(clock: FakeClock) -> None:
    """Window of 3, rate 2/3: after many laps only the last 3 calls count."""
    breaker = _breaker(clock, failure_threshold=None, failure_rate_threshold=0.6,
                       window_size=3, minimum_calls=3)
    for _ in range(4):  # four laps of (fail, success, success): 1 of 3 each time
        _fail(breaker)
        _succeed(breaker, 2)
        assert breaker.state is CLOSED
    _fail(breaker)  # window: success, success, fail
    assert breaker.state is CLOSED
    _fail(breaker)  # window: success, fail, fail = 2/3 >= 0.6
    assert breaker.state is OPEN


def test_stale_success_does_not_reset_the_count(clock: FakeClock) -> None:
    """A success reported by a call from before the last trip does not undo a new failure."""
    breaker = _breaker(clock, failure_threshold=2, reset_timeout=1)
    stale = breaker.acquire()
    _fail(breaker, 2)
    clock.advance(1)
    _succeed(breaker)  # the probe closes it
    _fail(breaker)
    breaker.on_success(stale)
    _fail(breaker)
    assert breaker.state is OPEN


def test_a_close_starts_counting_from_zero(clock: FakeClock) -> None:
    """After a close, threshold - 1 failures keep the breaker closed."""
    breaker = _breaker(clock, failure_threshold=2, reset_timeout=1)
    _fail(breaker, 2)
    clock.advance(1)
    _succeed(breaker)
    _fail(breaker)
    assert breaker.state is CLOSED


def test_window_after_a_close_evicts_its_oldest_call(clock: FakeClock) -> None:
    """After a close the refilled window drops its oldest call first: F,S,S then F is 1 of 3."""
    breaker = _breaker(clock, failure_threshold=None, failure_rate_threshold=0.6,
                       window_size=3, minimum_calls=3, reset_timeout=1)
    _fail(breaker, 3)
    clock.advance(1)
    _succeed(breaker)
    assert breaker.state is CLOSED
    _fail(breaker)
    _succeed(breaker, 2)
    _fail(breaker)  # evicts the first F: S,S,F
    assert breaker.state is CLOSED
    _fail(breaker)  # S,F,F: 2 of 3
    assert breaker.state is OPEN


def test_window_starts_empty_after_a_close(clock: FakeClock) -> None:
    """Failures from before a trip do not count again once the breaker has closed."""
    breaker = _breaker(clock, failure_threshold=None, failure_rate_threshold=0.5,
                       window_size=4, minimum_calls=2, reset_timeout=1)
    _succeed(breaker)
    _fail(breaker)  # 1 of 2: trips
    assert breaker.state is OPEN
    clock.advance(1)
    _succeed(breaker)  # the probe closes it
    assert breaker.state is CLOSED
    _succeed(breaker)
    _fail(breaker)  # 1 of 2 again, not 2 of 4: the old failure is gone...
    assert breaker.state is OPEN  # ...and 1/2 trips by itself, so check a close call:
    clock.advance(1)
    _succeed(breaker)
    _succeed(breaker, 3)
    _fail(breaker)  # 1 of 4 since the close (with the old calls it would be 2 of 6 anyway)
    assert breaker.state is CLOSED


def test_reports_from_before_a_trip_are_ignored_after_the_close(clock: FakeClock) -> None:
    """A call admitted before the breaker tripped and closed again reports into nothing."""
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=1)
    old = breaker.acquire()
    _fail(breaker)
    clock.advance(1)
    _succeed(breaker)
    assert breaker.state is CLOSED
    breaker.on_failure(old)  # stale: from the breaker's first closed period
    assert breaker.state is CLOSED
    windowed = _breaker(clock, failure_threshold=None, failure_rate_threshold=0.5,
                        window_size=2, minimum_calls=1, reset_timeout=1)
    stale = windowed.acquire()
    _fail(windowed)
    clock.advance(1)
    _succeed(windowed)
    windowed.on_success(stale)  # must not be recorded in the new window either
    _fail(windowed)  # alone in the window: 1 of 1
    assert windowed.state is OPEN


# -- breaker: half-open ----------------------------------------------------------------------


def test_half_open_closes_only_after_every_probe_succeeded(clock: FakeClock) -> None:
    """With 3 probes, 2 successes leave it half-open; the third closes it."""
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=1, half_open_probes=3)
    _fail(breaker)
    clock.advance(1)
    probes = [breaker.acquire() for _ in range(3)]
    assert probes == [-1, -2, -3]
    breaker.on_success(probes[0])
    breaker.on_success(probes[1])
    assert breaker.state is HALF_OPEN
    extra = [breaker.acquire(), breaker.acquire()]  # one in flight: two permits free
    assert extra == [-4, -5]
    with pytest.raises(errors.CircuitOpenError):
        breaker.acquire()  # ...and no more
    breaker.on_success(probes[2])
    assert breaker.state is CLOSED
    breaker.on_failure(extra[0])  # a probe of the finished half-open period: ignored
    assert breaker.state is CLOSED


def test_late_report_of_an_expired_probe_is_ignored(clock: FakeClock) -> None:
    """A probe that expired and then reports success neither raises nor counts."""
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=1, probe_timeout=2,
                       half_open_probes=2)
    _fail(breaker)
    clock.advance(1)
    lost = breaker.acquire()
    clock.advance(2)  # expired exactly now
    fresh = breaker.acquire()
    third = breaker.acquire()  # lost's permit was freed: two fresh probes
    breaker.on_success(lost)
    breaker.on_success(fresh)
    assert breaker.state is HALF_OPEN  # lost's late success did not count
    breaker.on_success(third)
    assert breaker.state is CLOSED


def test_release_of_a_finished_probe_is_harmless(clock: FakeClock) -> None:
    """Releasing a probe after the breaker closed (or twice) raises nothing, changes nothing."""
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=1, half_open_probes=2)
    _fail(breaker)
    clock.advance(1)
    first, second = breaker.acquire(), breaker.acquire()
    breaker.release(first)
    breaker.release(first)
    breaker.on_success(second)
    breaker.on_success(breaker.acquire())
    assert breaker.state is CLOSED
    breaker.release(second)
    breaker.release(breaker.acquire())  # a closed call's token: nothing to free
    assert breaker.state is CLOSED


def test_rejection_in_half_open_says_when_a_permit_frees(clock: FakeClock) -> None:
    """A rejected caller is told the time until the oldest probe expires, at most
    HALF_OPEN_RETRY_AFTER (a probe usually reports well before its permit expires)."""
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=1, probe_timeout=4,
                       half_open_probes=2)
    _fail(breaker)
    clock.advance(1)
    breaker.acquire()  # expires at t+5
    clock.advance(1)
    breaker.acquire()
    with pytest.raises(errors.CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == pytest.approx(HALF_OPEN_RETRY_AFTER)  # 3 s left, capped
    clock.advance(2.5)
    with pytest.raises(errors.CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == pytest.approx(0.5)  # less than the cap: the time left


def test_open_time_grows_and_is_capped(clock: FakeClock) -> None:
    """Trip n stays open reset * multiplier^(n-1), at most max_reset_timeout."""
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=2,
                       reset_timeout_multiplier=3, max_reset_timeout=10)
    waits = []
    _fail(breaker)
    for _ in range(3):
        with pytest.raises(errors.CircuitOpenError) as caught:
            breaker.acquire()
        waits.append(caught.value.retry_after)
        clock.advance(waits[-1] - 0.5)
        assert breaker.state is OPEN
        clock.advance(0.5)
        assert breaker.state is HALF_OPEN
        _fail(breaker)
    assert waits == [2, 6, 10]


def test_record_classifies_codes(clock: FakeClock) -> None:
    """record(): failure codes count, CANCELLED is no verdict, any other answer is a success."""
    assert {_C.UNAVAILABLE, _C.DEADLINE_EXCEEDED, _C.INTERNAL, _C.UNKNOWN,
            _C.DATA_LOSS} == DEFAULT_FAILURE_CODES
    breaker = _breaker(clock, failure_threshold=2)
    for code in (_C.UNAVAILABLE, _C.INVALID_ARGUMENT, _C.INTERNAL, _C.CANCELLED):
        breaker.record(breaker.acquire(), code)
    assert breaker.state is CLOSED  # the success in between reset the count; CANCELLED ignored
    breaker.record(breaker.acquire(), _C.DATA_LOSS)
    assert breaker.state is OPEN
    assert breaker.state is OPEN
    clock.advance(30)
    breaker.record(breaker.acquire(), _C.OK)
    assert breaker.state is CLOSED
    custom = _breaker(clock, failure_threshold=1, failure_codes=[_C.RESOURCE_EXHAUSTED])
    custom.record(custom.acquire(), _C.UNAVAILABLE)
    assert custom.state is CLOSED
    custom.record(custom.acquire(), _C.RESOURCE_EXHAUSTED)
    assert custom.state is OPEN


def test_circuit_open_error_names_target_method_and_wait(clock: FakeClock) -> None:
    """The rejection carries the target, the method and the wait, in details and message."""
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=7)
    _fail(breaker)
    with pytest.raises(errors.CircuitOpenError) as caught:
        breaker.acquire()
    error = caught.value
    assert error.details == {"target": "edge:1", "method": "/s/M"}
    assert error.message == "Circuit breaker for edge:1 is open; retry after 7.000s"
    assert error.retry_after == 7
    assert error.code() is _C.UNAVAILABLE
    whole = ChannelBreaker("edge:2", BreakerSettings(failure_threshold=1), clock=clock.now,
                           registry=CollectorRegistry())
    _fail(whole)
    with pytest.raises(errors.CircuitOpenError) as caught:
        whole.acquire()
    assert caught.value.details == {"target": "edge:2"}  # no method: one breaker per target


def test_transition_events_and_metrics_are_exact(clock: FakeClock) -> None:
    """The state-change event (name, fields, level) and the counters an operator reads."""
    registry = CollectorRegistry()
    breaker = _breaker(clock, registry, failure_threshold=1, reset_timeout=4)
    with capture_logs() as logs:
        _fail(breaker)
        with pytest.raises(errors.CircuitOpenError):
            breaker.acquire()
        clock.advance(4)
        breaker.on_failure(breaker.acquire())
    assert logs == [
        {"event": "circuit_breaker_state_changed", "log_level": "warning", "target": "edge:1",
         "method": "/s/M", "from_state": "closed", "to_state": "open", "open_for": 4.0},
        {"event": "circuit_breaker_state_changed", "log_level": "info", "target": "edge:1",
         "method": "/s/M", "from_state": "open", "to_state": "half_open"},
        {"event": "circuit_breaker_state_changed", "log_level": "warning", "target": "edge:1",
         "method": "/s/M", "from_state": "half_open", "to_state": "open", "open_for": 4.0},
    ]
    labels = {"target": "edge:1", "method": "/s/M"}
    assert registry.get_sample_value("octollm_client_circuit_state", labels) == OPEN.gauge
    assert registry.get_sample_value("octollm_client_circuit_rejected_total", labels) == 1
    for old, new, count in (("closed", "open", 1), ("open", "half_open", 1),
                            ("half_open", "open", 1), ("half_open", "closed", None)):
        assert registry.get_sample_value("octollm_client_circuit_transitions_total", {
            **labels, "from_state": old, "to_state": new}) == count
    assert repr(breaker) == "ChannelBreaker(target='edge:1', method='/s/M', state=OPEN)"


def test_listener_failure_is_logged_with_the_target(clock: FakeClock) -> None:
    """A listener that raises is logged (with its target) and later listeners still run."""
    seen: list[CircuitState] = []

    def broken(*_: object) -> None:
        raise RuntimeError("listener bug")

    breaker = ChannelBreaker("edge:3", BreakerSettings(failure_threshold=1), clock=clock.now,
                             registry=CollectorRegistry(),
                             listeners=[broken, lambda b, old, new: seen.append(new)])
    with capture_logs() as logs:
        _fail(breaker)
    assert seen == [OPEN]
    failed = [e for e in logs if e["event"] == "circuit_breaker_listener_failed"]
    assert len(failed) == 1 and failed[0]["target"] == "edge:3"
    assert failed[0]["log_level"] == "error"


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


# -- breaker settings ----------------------------------------------------------------------


def test_breaker_settings_accept_the_edge_values() -> None:
    """Rate 1.0, minimum_calls == window_size, multiplier 1, max == reset, rate alone: valid."""
    edge = BreakerSettings(failure_threshold=None, failure_rate_threshold=1.0, window_size=1,
                           minimum_calls=1, reset_timeout=0.001, reset_timeout_multiplier=1,
                           max_reset_timeout=0.001, half_open_probes=1, probe_timeout=0.001,
                           failure_codes=["UNAVAILABLE", 4])
    assert edge.failure_codes == {_C.UNAVAILABLE, _C.DEADLINE_EXCEEDED}
    assert BreakerSettings(failure_threshold=1).failure_threshold == 1


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"failure_threshold": None}, ValueError,
     "set failure_threshold, failure_rate_threshold or both"),
    ({"failure_threshold": 0}, ValueError, "failure_threshold must be > 0, not 0"),
    ({"failure_threshold": 2.0}, TypeError, "failure_threshold must be an int, not 2.0"),
    ({"failure_threshold": True}, TypeError, "failure_threshold must be an int, not True"),
    ({"failure_rate_threshold": 0}, ValueError, "failure_rate_threshold must be > 0, not 0"),
    ({"failure_rate_threshold": "1"}, TypeError,
     "failure_rate_threshold must be a number, not '1'"),
    ({"failure_rate_threshold": 1.01}, ValueError,
     "failure_rate_threshold is a fraction in (0, 1]"),
    ({"window_size": 0, "minimum_calls": 0}, ValueError, "window_size must be > 0, not 0"),
    ({"window_size": 20.0}, TypeError, "window_size must be an int, not 20.0"),
    ({"minimum_calls": 0}, ValueError, "minimum_calls must be > 0, not 0"),
    ({"minimum_calls": 10.0}, TypeError, "minimum_calls must be an int, not 10.0"),
    ({"minimum_calls": 21}, ValueError, "minimum_calls must not exceed window_size"),
    ({"reset_timeout": float("nan")}, ValueError, "reset_timeout must be > 0, not nan"),
    ({"reset_timeout": "30"}, TypeError, "reset_timeout must be a number, not '30'"),
    ({"reset_timeout_multiplier": "2"}, TypeError,
     "reset_timeout_multiplier must be a number, not '2'"),
    ({"reset_timeout_multiplier": 0.99}, ValueError,
     "reset_timeout_multiplier must be >= 1 (the open time never shrinks)"),
    ({"reset_timeout": 10, "max_reset_timeout": 9.99}, ValueError,
     "max_reset_timeout must be >= reset_timeout"),
    ({"max_reset_timeout": 0}, ValueError, "max_reset_timeout must be > 0, not 0"),
    ({"half_open_probes": 0}, ValueError, "half_open_probes must be > 0, not 0"),
    ({"half_open_probes": 1.0}, TypeError, "half_open_probes must be an int, not 1.0"),
    ({"probe_timeout": -1}, ValueError, "probe_timeout must be > 0, not -1"),
    ({"failure_codes": [_C.OK]}, ValueError, "failure_codes may not contain OK"),
    ({"failure_codes": ["NOPE"]}, ValueError,
     "failure_codes: 'NOPE' is not a gRPC status code"),
])
def test_breaker_settings_reject_with_a_message(kwargs: dict[str, object],
                                                error: type[Exception], message: str) -> None:
    """Each invalid breaker setting is refused with a message naming it (the whole message)."""
    with pytest.raises(error) as caught:
        BreakerSettings(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message


# -- server delays -------------------------------------------------------------------------


def _retry_info(seconds: int, nanos: int = 0) -> bytes:
    status = status_pb2.Status(code=8, message="x")
    status.details.add().Pack(error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)))
    return status.SerializeToString()


@pytest.mark.parametrize(("trailers", "expected"), [
    (((DETAILS_KEY, _retry_info(10 * 86_400)),), STOP),  # ten days: do not retry
    (((DETAILS_KEY, _retry_info(-5)),), STOP),  # negative
    (((DETAILS_KEY, _retry_info(86_400)),), MAX_PUSHBACK),  # a day: the longest honoured
    (((DETAILS_KEY, _retry_info(0)),), 0.0),
    (((DETAILS_KEY, _retry_info(1, 500_000_000)),), 1.5),
    (((PUSHBACK_KEY, "86400000"),), MAX_PUSHBACK),
    (((PUSHBACK_KEY, "86400001"),), STOP),
    (((PUSHBACK_KEY, "0000000000000000000000000001"),), 0.001),  # leading zeros: still 1 ms
    (((PUSHBACK_KEY, "9" * 13),), STOP),
    (((PUSHBACK_KEY, " 250 "),), 0.25),
    (((PUSHBACK_KEY, b"\xff"),), STOP),
    (((PUSHBACK_KEY, "١٢"),), STOP),  # non-ASCII digits
    (((DETAILS_KEY, "not bytes"),), None),
    (((DETAILS_KEY, status_pb2.Status(code=8).SerializeToString()),), None),  # no RetryInfo
    ((("x", "1"), ("y", "2"), (PUSHBACK_KEY, "40")), 0.04),  # found after other keys
    ((), None),
    ((("only-one-element",),), None),  # malformed metadata: as if none
])
def test_server_delay_edges(trailers: object, expected: float | None) -> None:
    """Out-of-range or malformed server delays stop retries or are ignored, never obeyed."""
    assert server_delay(trailers) == expected  # type: ignore[arg-type]


def test_full_jitter_uses_the_policy_ceiling_for_each_retry() -> None:
    """Draws are uniform over [0, ceiling(retry)] from the given random source."""
    policy = RetryPolicy(initial_backoff=1, backoff_multiplier=3, max_backoff=100)
    rng, twin = random.Random(5), random.Random(5)
    assert [full_jitter(policy, n, rng) for n in (1, 2, 3)] == [
        twin.uniform(0, 1), twin.uniform(0, 3), twin.uniform(0, 9)]


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


def _retry(clock: FakeClock, cap: float | None, timeout: float | None) -> CallRetry:
    return _call(clock, RetryPolicy(max_attempts=5, per_attempt_timeout=cap), timeout=timeout)


def test_attempt_timeout_is_the_cap_without_a_caller_timeout(clock: FakeClock) -> None:
    """No caller deadline: the cap every time (and the attempt counts as capped)."""
    retry = _retry(clock, 2.5, None)
    assert retry.deadline is None
    for _ in range(2):
        assert retry.attempt_timeout() == 2.5
        assert retry.capped is True
        clock.advance(100)
    plain = _retry(clock, None, None)
    assert plain.attempt_timeout() is None
    assert plain.capped is False


def test_attempt_timeout_is_what_is_left_of_the_deadline_capped(clock: FakeClock) -> None:
    """With a deadline: min(cap, deadline - now); zero or less once it has passed."""
    retry = _retry(clock, 3.0, 10.0)
    assert retry.deadline == clock.now() + 10.0
    assert retry.attempt_timeout() == 3.0 and retry.capped is True
    clock.advance(7.0)
    assert retry.attempt_timeout() == pytest.approx(3.0) and retry.capped is False  # cap == left
    clock.advance(1.5)
    assert retry.attempt_timeout() == pytest.approx(1.5) and retry.capped is False
    clock.advance(2.5)
    assert retry.attempt_timeout() == pytest.approx(-1.0)
    uncapped = _retry(clock, None, 4.0)
    clock.advance(1.0)
    assert uncapped.attempt_timeout() == pytest.approx(3.0) and uncapped.capped is False


def test_deadline_exceeded_is_retried_only_when_the_cap_cut_the_attempt(clock: FakeClock) -> None:
    """DEADLINE_EXCEEDED is retried after a capped attempt, never after the caller's own."""
    capped = _retry(clock, 1.0, 10.0)
    capped.attempt_timeout()
    assert capped.next_delay(grpc.StatusCode.DEADLINE_EXCEEDED, None) is not None
    assert capped.attempts == 2
    equal = _retry(clock, 10.0, 10.0)  # the cap is the caller's whole time: not a cap
    equal.attempt_timeout()
    assert equal.next_delay(grpc.StatusCode.DEADLINE_EXCEEDED, None) is None
    callers = _retry(clock, None, 10.0)
    callers.attempt_timeout()
    assert callers.next_delay(grpc.StatusCode.DEADLINE_EXCEEDED, None) is None
