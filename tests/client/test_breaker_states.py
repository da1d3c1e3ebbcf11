"""The client breaker's state machine without a network: counting while closed, the rate
window, half-open permits, stale and late reports, open times, settings, events and metrics."""

from __future__ import annotations

import threading

import grpc
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc._core.breaker import HALF_OPEN_RETRY_AFTER
from octollm_grpc.client import (
    BreakerSettings,
    ChannelBreaker,
    CircuitState,
)
from octollm_grpc.client._breaker import DEFAULT_FAILURE_CODES, ChannelBreakers
from octollm_grpc.testing import FakeClock
from tests.client.breakers import CLOSED, HALF_OPEN, OPEN
from tests.client.breakers import edge_breaker as _breaker
from tests.client.breakers import fail as _fail
from tests.client.breakers import succeed as _succeed

_C = grpc.StatusCode


# -- circuit breaker state machine ------------------------------------------------------------


def _plain_breaker(clock: FakeClock, **settings: object) -> ChannelBreaker:
    return ChannelBreaker("core", BreakerSettings(**settings),  # type: ignore[arg-type]
                          clock=clock.now, registry=CollectorRegistry())




def test_breaker_opens_after_consecutive_failures_only(clock: FakeClock) -> None:
    """Five consecutive failures open it; a success in between restarts the count."""
    breaker = _plain_breaker(clock)
    _fail(breaker, 4)
    breaker.on_success(breaker.acquire())
    _fail(breaker, 4)
    assert breaker.state is CircuitState.CLOSED
    _fail(breaker)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(errors.CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == pytest.approx(30)
    clock.advance(29.5)
    with pytest.raises(errors.CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == pytest.approx(0.5)


def test_breaker_failure_rate_over_sliding_window(clock: FakeClock) -> None:
    """With a rate threshold, it opens once the window's failed share reaches it."""
    breaker = _plain_breaker(clock, failure_threshold=None, failure_rate_threshold=0.5,
                       window_size=10, minimum_calls=4)
    _fail(breaker, 3)
    assert breaker.state is CircuitState.CLOSED  # fewer than minimum_calls
    for _ in range(9):
        breaker.on_success(breaker.acquire())
    # The window now holds the last 10 calls: 1 failure, 9 successes; each new failure
    # pushes out the oldest call (first that failure, then successes).
    _fail(breaker, 4)
    assert breaker.state is CircuitState.CLOSED  # 4 of 10
    _fail(breaker, 1)
    assert breaker.state is CircuitState.OPEN  # 5 of 10 = the threshold


def test_breaker_reset_timeout_grows_on_repeated_trips(clock: FakeClock) -> None:
    """A failed probe reopens it for longer: 10 s, 20 s, then capped at 30 s."""
    breaker = _plain_breaker(clock, failure_threshold=1, reset_timeout=10,
                       reset_timeout_multiplier=2, max_reset_timeout=30)
    _fail(breaker)
    waits = []
    for _ in range(3):
        with pytest.raises(errors.CircuitOpenError) as caught:
            breaker.acquire()
        waits.append(caught.value.retry_after)
        clock.advance(caught.value.retry_after)
        _fail(breaker)  # the probe fails
    assert waits == [10, 20, 30]
    clock.advance(30)
    breaker.on_success(breaker.acquire())
    assert breaker.state is CircuitState.CLOSED
    _fail(breaker)
    with pytest.raises(errors.CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == 10  # closing reset the growth


def test_half_open_permits_are_exact_under_threads(clock: FakeClock) -> None:
    """100 threads acquiring at once from a half-open breaker get exactly N permits."""
    breaker = _plain_breaker(clock, failure_threshold=1, reset_timeout=1, half_open_probes=3)
    _fail(breaker)
    clock.advance(1)
    tokens: list[int] = []
    rejected: list[errors.CircuitOpenError] = []
    lock = threading.Lock()
    barrier = threading.Barrier(100)

    def try_acquire() -> None:
        barrier.wait(10)
        try:
            token = breaker.acquire()
        except errors.CircuitOpenError as error:
            with lock:
                rejected.append(error)
        else:
            with lock:
                tokens.append(token)

    threads = [threading.Thread(target=try_acquire) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(tokens) == 3 and len(rejected) == 97
    for token in tokens:
        breaker.on_success(token)
    assert breaker.state is CircuitState.CLOSED


def test_probe_that_never_reports_expires(clock: FakeClock) -> None:
    """A lost probe frees its permit after probe_timeout; its late report is ignored."""
    breaker = _plain_breaker(clock, failure_threshold=1, reset_timeout=1, probe_timeout=5)
    _fail(breaker)
    clock.advance(1)
    lost = breaker.acquire()
    with pytest.raises(errors.CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == pytest.approx(1)  # HALF_OPEN_RETRY_AFTER, not the 5 s
    clock.advance(5)
    probe = breaker.acquire()
    breaker.on_failure(lost)  # too late: no effect
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.on_success(probe)
    assert breaker.state is CircuitState.CLOSED


def test_release_frees_a_probe_without_a_verdict(clock: FakeClock) -> None:
    """release() (a cancelled call) frees the permit and leaves the state alone."""
    breaker = _plain_breaker(clock, failure_threshold=1, reset_timeout=1)
    _fail(breaker)
    clock.advance(1)
    breaker.release(breaker.acquire())
    breaker.record(breaker.acquire(), _C.CANCELLED)
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.record(breaker.acquire(), _C.NOT_FOUND)  # the server answered: a success
    assert breaker.state is CircuitState.CLOSED


def test_stale_reports_from_before_a_trip_are_ignored(clock: FakeClock) -> None:
    """A call admitted while closed that reports after the breaker opened changes nothing."""
    breaker = _plain_breaker(clock, failure_threshold=1, reset_timeout=1)
    old = breaker.acquire()
    _fail(breaker)
    clock.advance(1)
    probe = breaker.acquire()
    breaker.on_success(old)
    breaker.on_failure(old)
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.on_success(probe)
    assert breaker.state is CircuitState.CLOSED


def test_listeners_logs_and_metrics_follow_transitions(clock: FakeClock) -> None:
    """Listeners, structlog events and Prometheus see closed->open->half_open->closed."""
    registry = CollectorRegistry()
    seen: list[tuple[str, str]] = []

    def broken(*_: object) -> None:
        raise RuntimeError("listener bug")

    breaker = ChannelBreaker("metrics:1", BreakerSettings(failure_threshold=1, reset_timeout=1),
                             clock=clock.now, registry=registry, listeners=[broken])
    breaker.add_listener(lambda b, old, new: seen.append((old.name, new.name)))
    with capture_logs() as logs:
        _fail(breaker)
        clock.advance(1)
        breaker.on_success(breaker.acquire())
    assert seen == [("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]
    changes = [(e["from_state"], e["to_state"]) for e in logs
               if e["event"] == "circuit_breaker_state_changed"]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert sum(e["event"] == "circuit_breaker_listener_failed" for e in logs) == 3
    labels = {"target": "metrics:1", "method": ""}
    assert registry.get_sample_value("octollm_client_circuit_state", labels) == 0
    assert registry.get_sample_value(
        "octollm_client_circuit_transitions_total",
        {**labels, "from_state": "half_open", "to_state": "closed"}) == 1


def test_breaker_settings_validate() -> None:
    """Nonsense breaker settings fail at construction."""
    for bad in ({"failure_threshold": None}, {"failure_threshold": 0},
                {"failure_rate_threshold": 1.5}, {"minimum_calls": 30, "window_size": 10},
                {"reset_timeout": 0}, {"reset_timeout_multiplier": 0.5},
                {"half_open_probes": 0}, {"failure_codes": ["OK"]}):
        with pytest.raises((ValueError, TypeError)):
            BreakerSettings(**bad)  # type: ignore[arg-type]


def test_per_method_breakers_are_independent(clock: FakeClock) -> None:
    """With per_method, one method's failures do not open another method's breaker."""
    group = ChannelBreakers("per-method", BreakerSettings(failure_threshold=1, per_method=True),
                            clock=clock.now, registry=CollectorRegistry())
    _fail(group.for_method("/s/A"))
    assert group.for_method("/s/A").state is CircuitState.OPEN
    assert group.for_method("/s/B").state is CircuitState.CLOSED
    shared = ChannelBreakers("shared", BreakerSettings(), registry=CollectorRegistry())
    assert shared.for_method("/s/A") is shared.for_method("/s/B")


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
