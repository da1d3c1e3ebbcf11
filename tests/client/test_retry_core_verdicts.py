"""The retry core's verdicts and hooks, without a network (a mutation run found them unpinned).

Whose deadline ended an attempt (`ended_by_callers_deadline`), what a failed attempt reports to
the breaker, the per-method attempt, retry and throttle counters, the ``rpc.retry`` span event,
and the defaults a `Resilience` starts from.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc.client import (
    BreakerSettings,
    ChannelBreaker,
    CircuitState,
    RetryBudget,
    RetryPolicies,
    RetryPolicy,
)
from octollm_grpc.client._hedging import HedgingPolicies, HedgingPolicy
from octollm_grpc.client._resilience import (
    CallRetry,
    MethodPlan,
    Resilience,
    ended_by_callers_deadline,
)
from octollm_grpc.observability._client_metrics import ClientMetrics
from octollm_grpc.status._limits import PUSHBACK_KEY
from octollm_grpc.testing import FakeClock

_C = grpc.StatusCode
LABELS = {"grpc_type": "unary", "grpc_service": "s.S", "grpc_method": "M"}
METHOD = "/s.S/M"


def _core(clock: FakeClock, policy: RetryPolicy | None = None, *,
          budget: RetryBudget | None = None, breaker: ChannelBreaker | None = None,
          registry: CollectorRegistry | None = None) -> Resilience:
    return Resilience(retry=RetryPolicies(policy) if policy else None, budget=budget,
                      breakers=breaker, clock=clock.now, rng=random.Random(7),
                      metrics=ClientMetrics(registry) if registry is not None else None)


def _retry(clock: FakeClock, policy: RetryPolicy | None, timeout: float | None, *,
           budget: RetryBudget | None = None,
           registry: CollectorRegistry | None = None) -> CallRetry:
    core = _core(clock, policy, budget=budget, registry=registry)
    return CallRetry(core, core.plan(METHOD), timeout, clock.now())


def _breaker(clock: FakeClock, threshold: int = 1) -> ChannelBreaker:
    return ChannelBreaker("verdicts:1", BreakerSettings(failure_threshold=threshold),
                          method=METHOD, clock=clock.now, registry=CollectorRegistry())


# -- whose deadline ended the attempt ------------------------------------------------------


def test_only_deadline_exceeded_can_be_the_callers_deadline(clock: FakeClock) -> None:
    """Another code is the target's answer even long after the caller's deadline."""
    retry = _retry(clock, RetryPolicy(), 1.0)
    late = clock.now() + 100.0
    assert ended_by_callers_deadline(_C.DEADLINE_EXCEEDED, retry, retry.deadline, late) is True
    for code in (_C.UNAVAILABLE, _C.OK, _C.CANCELLED, _C.RESOURCE_EXHAUSTED):
        assert ended_by_callers_deadline(code, retry, retry.deadline, late) is False
        assert ended_by_callers_deadline(code, None, 5.0, 1000.0) is False


def test_no_caller_deadline_means_the_target_timed_out(clock: FakeClock) -> None:
    """Without a caller deadline DEADLINE_EXCEEDED is the server's (or the cap's): a failure."""
    assert ended_by_callers_deadline(_C.DEADLINE_EXCEEDED, None, None, 1e9) is False
    retry = _retry(clock, RetryPolicy(), None)
    assert ended_by_callers_deadline(_C.DEADLINE_EXCEEDED, retry, None, 1e9) is False


def test_a_capped_attempt_is_the_targets_failure(clock: FakeClock) -> None:
    """The per-attempt cap cut the attempt: the target was slow, even past the deadline."""
    retry = _retry(clock, RetryPolicy(per_attempt_timeout=1.0), 10.0)
    assert retry.attempt_timeout() == 1.0 and retry.capped is True
    assert retry.deadline is not None
    assert ended_by_callers_deadline(
        _C.DEADLINE_EXCEEDED, retry, retry.deadline, retry.deadline + 1.0) is False
    clock.advance(9.5)  # now the cap (1 s) exceeds what is left: the caller's time runs it
    assert retry.attempt_timeout() == pytest.approx(0.5) and retry.capped is False
    assert ended_by_callers_deadline(
        _C.DEADLINE_EXCEEDED, retry, retry.deadline, retry.deadline) is True


def test_the_deadline_counts_as_passed_within_ten_milliseconds() -> None:
    """grpc core and our clock read the deadline apart: 10 ms early still counts as reached,
    a little more than that does not (the server answered DEADLINE_EXCEEDED itself)."""
    deadline = 1000.0 + 0.01
    assert ended_by_callers_deadline(_C.DEADLINE_EXCEEDED, None, deadline, 1000.0) is True
    assert ended_by_callers_deadline(_C.DEADLINE_EXCEEDED, None, 1000.0, 1000.0) is True
    assert ended_by_callers_deadline(_C.DEADLINE_EXCEEDED, None, 1000.0, 1050.0) is True
    assert ended_by_callers_deadline(_C.DEADLINE_EXCEEDED, None, 1000.0111, 1000.0) is False
    assert ended_by_callers_deadline(_C.DEADLINE_EXCEEDED, None, 1001.0, 1000.0) is False
    assert ended_by_callers_deadline(_C.DEADLINE_EXCEEDED, None, 1000.02, 1000.0) is False


# -- what a failed attempt reports to the breaker ------------------------------------------


def test_the_callers_deadline_frees_the_probe_and_counts_no_failure(clock: FakeClock) -> None:
    """Half-open, one probe: an attempt ended by the caller's deadline frees the probe permit
    (the next attempt may probe) and leaves the breaker half-open; a target failure opens it."""
    breaker = _breaker(clock)
    plan = _core(clock, breaker=breaker).plan(METHOD)
    plan.record(plan.acquire(), _C.UNAVAILABLE, False)
    assert breaker.state is CircuitState.OPEN
    clock.advance(breaker.settings.reset_timeout)
    token = plan.acquire()
    assert breaker.state is CircuitState.HALF_OPEN
    plan.record(token, _C.DEADLINE_EXCEEDED, True)
    assert breaker.state is CircuitState.HALF_OPEN
    token = plan.acquire()  # the permit was freed: a new probe is let through
    plan.record(token, _C.DEADLINE_EXCEEDED, False)
    assert breaker.state is CircuitState.OPEN


def test_record_passes_the_code_to_the_breaker(clock: FakeClock) -> None:
    """A code that is not a failure (the caller's own error) counts as the target answering."""
    breaker = _breaker(clock, threshold=2)
    plan = _core(clock, breaker=breaker).plan(METHOD)
    plan.record(plan.acquire(), _C.UNAVAILABLE, False)
    plan.record(plan.acquire(), _C.INVALID_ARGUMENT, False)  # resets the consecutive count
    plan.record(plan.acquire(), _C.UNAVAILABLE, False)
    assert breaker.state is CircuitState.CLOSED
    plan.record(plan.acquire(), _C.UNAVAILABLE, False)
    assert breaker.state is CircuitState.OPEN


def test_a_plan_without_breaker_or_metrics_records_nothing(clock: FakeClock) -> None:
    """No breaker, no budget, no metrics: recording is a no-op, never an error."""
    plan = MethodPlan(METHOD, None, None, None)
    assert plan.metrics is None and plan.acquire() == 0
    plan.record(0, _C.UNAVAILABLE, False)
    plan.record(0, _C.DEADLINE_EXCEEDED, True)
    plan.failed(_C.UNAVAILABLE)
    plan.succeeded(0)


# -- metrics ---------------------------------------------------------------------------------


def _sample(registry: CollectorRegistry, name: str, **extra: str) -> float | None:
    return registry.get_sample_value(name, {**LABELS, **extra})


def test_attempts_are_counted_by_code(clock: FakeClock, registry: CollectorRegistry) -> None:
    """Each failed and successful attempt is counted under its own code, on the method's labels."""
    core = _core(clock, registry=registry)
    plan = core.plan(METHOD)
    assert plan.metrics is ClientMetrics(registry).method(METHOD)
    plan.failed(_C.UNAVAILABLE)
    plan.failed(_C.UNAVAILABLE)
    plan.failed(_C.DEADLINE_EXCEEDED)
    plan.succeeded(plan.acquire())
    assert _sample(registry, "octollm_client_attempts_total", grpc_code="Unavailable") == 2.0
    assert _sample(registry, "octollm_client_attempts_total",
                   grpc_code="DeadlineExceeded") == 1.0
    assert _sample(registry, "octollm_client_attempts_total", grpc_code="OK") == 1.0


def test_retries_and_throttled_retries_are_counted(clock: FakeClock,
                                                   registry: CollectorRegistry) -> None:
    """A retry started counts once in retries; one the budget refused counts in throttled."""
    budget = RetryBudget(max_tokens=4, token_ratio=1)  # the 2nd failure leaves 2: not > 2
    retry = _retry(clock, RetryPolicy(max_attempts=5), None, budget=budget, registry=registry)
    assert retry.next_delay(_C.UNAVAILABLE, None) is not None
    assert _sample(registry, "octollm_client_retries_total") == 1.0
    assert _sample(registry, "octollm_client_throttled_total") == 0.0
    with capture_logs() as logs:
        assert retry.next_delay(_C.UNAVAILABLE, None) is None
    assert [log["event"] for log in logs] == ["rpc_retry_throttled"]
    assert _sample(registry, "octollm_client_retries_total") == 1.0
    assert _sample(registry, "octollm_client_throttled_total") == 1.0


def test_a_retry_without_metrics_still_retries_and_throttles(clock: FakeClock) -> None:
    """Counting is optional: without metrics the verdicts are the same."""
    budget = RetryBudget(max_tokens=4, token_ratio=1)
    retry = _retry(clock, RetryPolicy(max_attempts=5), None, budget=budget)
    assert retry.plan.metrics is None
    assert retry.next_delay(_C.UNAVAILABLE, None) is not None
    assert retry.next_delay(_C.UNAVAILABLE, None) is None
    assert retry.attempts == 2


# -- the span event and the pushback limit --------------------------------------------------


@pytest.fixture
def spans() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    """A tracer of a provider of the test's own (the global one is left alone)."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def test_a_retry_is_a_span_event_with_its_attempt_code_and_delay(
        clock: FakeClock, spans: tuple[trace.Tracer, InMemorySpanExporter]) -> None:
    """rpc.retry names the attempt about to start, the failed one's code and the wait."""
    tracer, exporter = spans
    retry = _retry(clock, RetryPolicy(max_attempts=3), None)
    with tracer.start_as_current_span("call"):
        assert retry.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "250"),)) == 0.25
        assert retry.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "-1"),)) is None  # no event
    (span,) = exporter.get_finished_spans()
    assert [(event.name, dict(event.attributes or {})) for event in span.events] == [
        ("rpc.retry", {"octollm.attempt": 2, "rpc.grpc.status_code": 14,
                       "octollm.retry.code": "UNAVAILABLE", "octollm.retry.delay_s": 0.25}),
    ]


def test_a_pushback_at_the_limit_is_obeyed_and_above_it_refused(clock: FakeClock) -> None:
    """max_pushback is the longest server delay waited: equal is waited, longer ends the call."""
    policy = RetryPolicy(max_attempts=3, max_pushback=2.0)
    assert _retry(clock, policy, None).next_delay(
        _C.UNAVAILABLE, ((PUSHBACK_KEY, "2000"),)) == 2.0
    too_long = _retry(clock, policy, None)
    with capture_logs() as logs:
        assert too_long.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "2001"),)) is None
    assert logs == [
        {"event": "rpc_retry_pushback_too_long", "log_level": "info", "method": METHOD,
         "attempt": 1, "code": "UNAVAILABLE", "delay": 2.001, "max_pushback": 2.0},
    ]
    assert too_long.attempts == 1


def test_a_pushback_resets_the_backoff_exponent(clock: FakeClock) -> None:
    """A6: after the server's own delay the jittered backoff starts again from the first."""
    retry = _retry(clock, RetryPolicy(max_attempts=5, initial_backoff=1, max_backoff=100,
                                      backoff_multiplier=10), None)
    twin = random.Random(7)
    assert retry.next_delay(_C.UNAVAILABLE, None) == twin.uniform(0, 1)
    assert retry.next_delay(_C.UNAVAILABLE, None) == twin.uniform(0, 10)
    assert retry.retries_backoff == 2
    assert retry.next_delay(_C.UNAVAILABLE, ((PUSHBACK_KEY, "5"),)) == 0.005
    assert retry.retries_backoff == 0
    assert retry.next_delay(_C.UNAVAILABLE, None) == twin.uniform(0, 1)


# -- the defaults a core starts from ---------------------------------------------------------


def test_a_core_reads_the_monotonic_clock_and_its_own_random_source() -> None:
    """Without clock= and rng=: time.monotonic and a Random of its own; settings kept."""
    budget = RetryBudget()
    policies = RetryPolicies(RetryPolicy())
    core = Resilience(retry=policies, budget=budget, breakers=None)
    assert core.clock is time.monotonic
    assert isinstance(core.rng, random.Random)
    assert Resilience(retry=None, budget=None, breakers=None).rng is not core.rng
    assert core.retry is policies and core.budget is budget and core.breakers is None
    assert core.metrics is None
    rng = random.Random(1)
    assert Resilience(retry=None, budget=None, breakers=None, rng=rng).rng is rng


def test_a_plan_carries_its_method_s_hedging_policy() -> None:
    """Each method's plan has the hedging policy its entry names (by str on sync, bytes on
    aio); a method without one, or a core without hedging, has none."""
    policy = HedgingPolicy(max_attempts=3)
    hedging = HedgingPolicies(methods={"/pkg.S/Hedged": policy})
    core = Resilience(retry=None, budget=None, breakers=None, hedging=hedging)
    assert core.hedging is hedging
    assert core.plan("/pkg.S/Hedged").hedging is policy
    assert core.plan(b"/pkg.S/Hedged").hedging is policy
    assert core.plan("/pkg.S/Other").hedging is None
    assert Resilience(retry=None, budget=None, breakers=None).plan("/pkg.S/Hedged").hedging is None


def test_a_new_call_starts_at_attempt_one_uncapped(clock: FakeClock) -> None:
    """A call's retry state: one attempt so far, no backoff yet, deadline = start + timeout."""
    core = _core(clock, RetryPolicy())
    plan = core.plan(METHOD)
    retry = CallRetry(core, plan, 2.5, 40.0)
    assert (retry.core, retry.plan) == (core, plan)
    assert (retry.attempts, retry.retries_backoff, retry.capped) == (1, 0, False)
    assert retry.deadline == 42.5
    assert CallRetry(core, plan, None, 40.0).deadline is None
