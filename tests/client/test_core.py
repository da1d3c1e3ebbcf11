"""The shared core, without a network: backoff math, pushback parsing, budget, breaker."""

from __future__ import annotations

import dataclasses
import random
import threading

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc._core.backoff import STOP, full_jitter, server_delay
from octollm_grpc.client import (
    BreakerSettings,
    ChannelBreaker,
    CircuitState,
    RetryBudget,
    RetryPolicies,
    RetryPolicy,
)
from octollm_grpc.client._breaker import ChannelBreakers
from octollm_grpc.client._resilience import CallRetry, Resilience
from octollm_grpc.status._limits import DETAILS_KEY, PUSHBACK_KEY
from octollm_grpc.testing import FakeClock

_C = grpc.StatusCode

# -- backoff ---------------------------------------------------------------------------------

DRAWS = 10_000


@pytest.mark.parametrize("retry", [1, 2, 3, 4, 5, 6])
def test_full_jitter_draws_lie_in_bounds_and_spread(retry: int) -> None:
    """10 000 seeded draws for retry n lie in [0, min(initial*mult^(n-1), max)], spread evenly."""
    policy = RetryPolicy(initial_backoff=0.1, backoff_multiplier=2.0, max_backoff=1.0)
    ceiling = min(0.1 * 2.0 ** (retry - 1), 1.0)
    assert policy.backoff_ceiling(retry) == pytest.approx(ceiling)
    rng = random.Random(retry)
    draws = [full_jitter(policy, retry, rng) for _ in range(DRAWS)]
    assert all(0.0 <= d <= ceiling for d in draws)
    deciles = [0] * 10
    for d in draws:
        deciles[min(int(d / ceiling * 10), 9)] += 1
    assert all(850 <= count <= 1150 for count in deciles), deciles
    assert sum(draws) / DRAWS == pytest.approx(ceiling / 2, rel=0.03)
    assert min(draws) < 0.01 * ceiling and max(draws) > 0.99 * ceiling


def test_backoff_ceiling_never_overflows() -> None:
    """A huge retry number is capped at max_backoff, not an overflow."""
    policy = RetryPolicy(initial_backoff=0.5, backoff_multiplier=10.0, max_backoff=7.0)
    assert policy.backoff_ceiling(10_000) == 7.0


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"max_attempts": 2.5}, {"initial_backoff": 0},
    {"initial_backoff": float("nan")}, {"max_backoff": 0.01}, {"backoff_multiplier": -1},
    {"per_attempt_timeout": 0}, {"retryable_codes": ["CANCELLED"]},
    {"retryable_codes": ["NOPE"]}, {"pushback_codes": [_C.OK]},
])
def test_retry_policy_rejects_bad_values(kwargs: dict[str, object]) -> None:
    """Invalid policies fail at construction, not on the first retry."""
    with pytest.raises((ValueError, TypeError)):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_policy_is_frozen_and_takes_code_names() -> None:
    """Codes may be given by name or number; the policy cannot be changed afterwards."""
    policy = RetryPolicy(retryable_codes=["unavailable", 8])  # type: ignore[arg-type]
    assert policy.retryable_codes == {_C.UNAVAILABLE, _C.RESOURCE_EXHAUSTED}
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 9  # type: ignore[misc]


def test_policies_pick_method_then_service_then_default() -> None:
    """Lookup order: exact method, then the service, then the default; None means no retry."""
    method, service = RetryPolicy(max_attempts=5), RetryPolicy(max_attempts=4)
    policies = RetryPolicies(default=RetryPolicy(max_attempts=2), methods={
        "/pkg.A/Get": method, "pkg.A": service, "pkg.A/Create": None})
    assert policies.policy_for("/pkg.A/Get") is method
    assert policies.policy_for("/pkg.A/List") is service
    assert policies.policy_for("/pkg.A/Create") is None
    assert policies.policy_for("/pkg.B/Get") == RetryPolicy(max_attempts=2)
    with pytest.raises(ValueError):
        RetryPolicies(methods={"a/b/c": None})


# -- server pushback ---------------------------------------------------------------------------


def _retry_info_bin(seconds: float) -> bytes:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    status = status_pb2.Status(code=8, message="x")
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status.SerializeToString()


@pytest.mark.parametrize(("trailers", "expected"), [
    (((PUSHBACK_KEY, "300"),), 0.3),
    (((PUSHBACK_KEY, b"0"),), 0.0),
    (((PUSHBACK_KEY, "-1"),), STOP),
    (((PUSHBACK_KEY, "later"),), STOP),
    (((PUSHBACK_KEY, "1e3"),), STOP),
    (((DETAILS_KEY, _retry_info_bin(1.5)),), 1.5),
    (((DETAILS_KEY, _retry_info_bin(1.5)), (PUSHBACK_KEY, "20")), 0.02),
    (((DETAILS_KEY, b"\xff garbage"),), None),
    ((("other", "1"),), None),
    (None, None),
])
def test_server_delay_reads_pushback_then_retry_info(trailers: object, expected: float) -> None:
    """grpc-retry-pushback-ms wins over RetryInfo; bad pushback stops; garbage is ignored."""
    assert server_delay(trailers) == expected  # type: ignore[arg-type]


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


# -- circuit breaker state machine ------------------------------------------------------------


def _breaker(clock: FakeClock, **settings: object) -> ChannelBreaker:
    return ChannelBreaker("core", BreakerSettings(**settings),  # type: ignore[arg-type]
                          clock=clock.now, registry=CollectorRegistry())


def _fail(breaker: ChannelBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.on_failure(breaker.acquire())


def test_breaker_opens_after_consecutive_failures_only(clock: FakeClock) -> None:
    """Five consecutive failures open it; a success in between restarts the count."""
    breaker = _breaker(clock)
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
    breaker = _breaker(clock, failure_threshold=None, failure_rate_threshold=0.5,
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
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=10,
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
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=1, half_open_probes=3)
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
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=1, probe_timeout=5)
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
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=1)
    _fail(breaker)
    clock.advance(1)
    breaker.release(breaker.acquire())
    breaker.record(breaker.acquire(), _C.CANCELLED)
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.record(breaker.acquire(), _C.NOT_FOUND)  # the server answered: a success
    assert breaker.state is CircuitState.CLOSED


def test_stale_reports_from_before_a_trip_are_ignored(clock: FakeClock) -> None:
    """A call admitted while closed that reports after the breaker opened changes nothing."""
    breaker = _breaker(clock, failure_threshold=1, reset_timeout=1)
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
