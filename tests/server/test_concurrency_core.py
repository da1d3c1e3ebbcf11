"""The adaptive concurrency limit without gRPC: the gradient rule, admission, partitions."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc._core.gradient import GradientLimit
from octollm_grpc.server import ConcurrencyLimit
from octollm_grpc.server._concurrency import ConcurrencyRejection, Permit
from octollm_grpc.testing import FakeClock

BASE = 0.010  # the no-load latency of these tests: 10 ms


def _gradient(**overrides: float) -> GradientLimit:
    settings: dict[str, float] = {"initial_limit": 10, "min_limit": 1, "max_limit": 100}
    settings.update(overrides)
    return GradientLimit(**settings)  # type: ignore[arg-type]


def test_latency_within_tolerance_grows_a_used_limit() -> None:
    """With the limit in use and latency at the baseline, each sample adds
    smoothing * queue_size (0.2)."""
    limit = _gradient()
    for _ in range(10):
        limit.update(BASE, in_flight=10)
    assert limit.limit == pytest.approx(12.0)


def test_queueing_latency_shrinks_the_limit_by_at_most_a_tenth_per_sample() -> None:
    """A sample far beyond tolerance halves the step's limit; smoothed, the limit loses
    10 % (minus the queue allowance) per sample."""
    limit = _gradient()
    limit.update(BASE, in_flight=10)  # the baseline
    before = limit.limit
    limit.update(BASE * 10, in_flight=10)
    assert limit.limit == pytest.approx(before * 0.9 + 0.2)


def test_an_unused_limit_never_grows_above_its_resting_level() -> None:
    """Few calls in flight: no evidence about the capacity, so no growth past initial_limit."""
    limit = _gradient()
    for _ in range(200):
        limit.update(BASE, in_flight=1)
    assert limit.limit == 10.0


def test_an_unused_limit_relaxes_back_to_its_resting_level_after_an_outlier() -> None:
    """Shrunk by slow samples, a lightly loaded limit returns to initial_limit (a burst after
    a quiet spell finds the resting limit), never beyond it."""
    limit = _gradient()
    limit.update(BASE, in_flight=1)
    for _ in range(5):
        limit.update(BASE * 5, in_flight=1)
    assert limit.limit < 8.0
    for _ in range(100):
        limit.update(BASE, in_flight=1)
    assert limit.limit == 10.0


def test_sustained_queueing_settles_near_the_tolerated_latency() -> None:
    """Latency that grows with the calls in flight (2 served at once, 10 ms each): the limit
    settles where latency is about tolerance / (1 - queue_size / limit) of the baseline."""
    limit = _gradient(initial_limit=20)
    limit.update(BASE, in_flight=1)
    for _ in range(500):
        in_flight = int(limit.limit)
        limit.update(BASE * max(1.0, in_flight / 2), in_flight=in_flight)
    assert 2 <= int(limit.limit) <= 4


def test_limit_stays_within_its_bounds() -> None:
    """Never below min_limit however slow, never above max_limit however fast."""
    limit = _gradient(min_limit=3, max_limit=12)
    limit.update(BASE, in_flight=10)
    for _ in range(200):
        limit.update(BASE * 100, in_flight=10)
    assert limit.limit == 3.0
    for _ in range(600):
        limit.update(BASE / 100, in_flight=12)
    assert limit.limit == 12.0


def test_queueing_does_not_raise_the_baseline() -> None:
    """The baseline averages only samples within tolerance: 100 queued samples at 5x leave it
    where the unqueued ones put it."""
    limit = _gradient()
    for rtt in (BASE, BASE * 1.2, BASE * 0.8, BASE):
        limit.update(rtt, in_flight=10)
    assert limit.baseline == pytest.approx(BASE)
    for _ in range(100):
        limit.update(BASE * 5, in_flight=10)
    assert limit.baseline == pytest.approx(BASE)


def test_a_server_slower_for_good_raises_the_baseline_within_two_windows() -> None:
    """When every sample is slower (a new normal, not a queue), the windowed minimum lifts the
    baseline to it after two windows, and the limit stops shrinking."""
    limit = _gradient(window=10)
    limit.update(BASE, in_flight=10)
    for _ in range(19):
        limit.update(BASE * 3, in_flight=10)
    assert limit.baseline == pytest.approx(BASE * 3)
    settled = limit.limit
    limit.update(BASE * 3, in_flight=10)
    assert limit.limit > settled


def test_samples_that_say_nothing_are_ignored() -> None:
    """A zero, negative or non-finite latency changes nothing."""
    limit = _gradient()
    for rtt in (0.0, -1.0, math.inf, math.nan):
        assert limit.update(rtt, in_flight=10) == 10.0
    assert limit.baseline == 0.0


@pytest.mark.parametrize("overrides", [
    {"min_limit": 0}, {"min_limit": 5, "max_limit": 4}, {"initial_limit": 200},
    {"tolerance": 0.9}, {"smoothing": 0.0}, {"smoothing": 1.5}, {"window": 0},
    {"queue_size": -1.0}, {"max_limit": math.inf},
])
def test_parameters_out_of_range_are_refused(overrides: dict[str, float]) -> None:
    """Each bound and parameter is checked when the limit is made."""
    with pytest.raises(ValueError):
        _gradient(**overrides)


# -- ConcurrencyLimit ---------------------------------------------------------------------------


def _admit(limiter: ConcurrencyLimit, method: str = "/pkg.S/M",
           metadata: tuple[tuple[str, str], ...] = ()) -> Permit | ConcurrencyRejection:
    route = limiter.route(method)
    assert route is not None
    return limiter.acquire(route, metadata)


def test_calls_over_the_limit_are_refused_with_the_wait_until_capacity_frees() -> None:
    """At the limit a call is refused; it is told rtt / limit (the mean time between two
    completions), and its refusal takes no latency sample."""
    clock = FakeClock()
    limiter = ConcurrencyLimit(min_limit=1, max_limit=10, initial_limit=2, clock=clock)
    first = _admit(limiter)
    assert isinstance(first, Permit)
    clock.advance(0.040)
    limiter.release(first)
    assert limiter.samples == 1
    held = [_admit(limiter), _admit(limiter)]
    refused = _admit(limiter)
    assert isinstance(refused, ConcurrencyRejection)
    assert refused.limit == 2 and refused.key == "default"
    assert refused.wait == pytest.approx(0.020)
    error = refused.error()
    assert error.retry_after == pytest.approx(0.020)
    assert error.details == {"limit": 2, "key": "concurrency"}
    assert limiter.samples == 1 and limiter.in_flight == 2
    for permit in held:
        assert isinstance(permit, Permit)
        limiter.release(permit, sample=False)
    assert limiter.in_flight == 0 and limiter.samples == 1


def test_health_and_reflection_are_never_limited() -> None:
    """The default unlimited services get no route: never counted, never refused."""
    limiter = ConcurrencyLimit(max_limit=1)
    assert limiter.route("/grpc.health.v1.Health/Check") is None
    assert limiter.route("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") \
        is None
    assert limiter.route("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo") is None
    assert limiter.route("/pkg.S/M") is not None


def test_a_partition_under_its_share_is_admitted_over_the_whole_limit() -> None:
    """Partitions: "batch" filled the whole limit by borrowing; "interactive" (80 %) still
    gets its guaranteed share, and batch is refused until it is back under its own 20 %."""
    limiter = ConcurrencyLimit(
        min_limit=1, max_limit=10, initial_limit=10,
        partitions={"interactive": 0.8, "batch": 0.2}, methods={"pkg.Batch": "batch"},
        partition_metadata="x-priority")
    batch = [_admit(limiter, "/pkg.Batch/Run") for _ in range(10)]
    assert all(isinstance(p, Permit) for p in batch)
    assert isinstance(_admit(limiter, "/pkg.Batch/Run"), ConcurrencyRejection)
    interactive = [_admit(limiter, "/pkg.S/M", (("x-priority", "interactive"),))
                   for _ in range(8)]
    assert all(isinstance(p, Permit) for p in interactive)
    assert isinstance(_admit(limiter, "/pkg.S/M", (("x-priority", "interactive"),)),
                      ConcurrencyRejection)
    assert limiter.partition_in_flight() == {"interactive": 8, "batch": 10, "default": 0}
    # The default partition got what the others left: nothing guaranteed, only borrowing.
    assert isinstance(_admit(limiter, "/pkg.S/M"), ConcurrencyRejection)


def test_methods_can_be_exempted_and_partitions_must_exist() -> None:
    """methods maps to None (never limited) or a known partition; shares are checked."""
    limiter = ConcurrencyLimit(methods={"/pkg.S/Ping": None})
    assert limiter.route("/pkg.S/Ping") is None
    with pytest.raises(ValueError, match="unknown partition"):
        ConcurrencyLimit(methods={"/pkg.S/M": "nope"})
    with pytest.raises(ValueError, match="more than 1"):
        ConcurrencyLimit(partitions={"a": 0.7, "b": 0.6})
    with pytest.raises(ValueError, match="must be an int"):
        ConcurrencyLimit(max_limit=2.5)  # type: ignore[arg-type]


def test_gauges_and_refusals_are_published_on_the_registry() -> None:
    """octollm_concurrency_limit, _in_flight{partition} (read at scrape) and
    _refused_total{grpc_service, grpc_method, partition}."""
    registry = CollectorRegistry()
    limiter = ConcurrencyLimit(min_limit=1, max_limit=5, initial_limit=1)
    route = limiter.route("/pkg.S/M", registry)
    assert route is not None
    permit = limiter.acquire(route, ())
    assert isinstance(limiter.acquire(route, ()), ConcurrencyRejection)
    assert registry.get_sample_value("octollm_concurrency_limit") == 1.0
    assert registry.get_sample_value("octollm_concurrency_in_flight",
                                     {"partition": "default"}) == 1.0
    assert registry.get_sample_value("octollm_concurrency_refused_total", {
        "grpc_service": "pkg.S", "grpc_method": "M", "partition": "default"}) == 1.0
    assert isinstance(permit, Permit)
    limiter.release(permit)
    assert registry.get_sample_value("octollm_concurrency_in_flight",
                                     {"partition": "default"}) == 0.0


def test_samples_can_be_fed_directly() -> None:
    """sample() takes latencies measured elsewhere: slow ones with the limit in use shrink it,
    and they count as samples."""
    limiter = ConcurrencyLimit(min_limit=1, max_limit=50, initial_limit=20)
    assert limiter.sample(0.010, in_flight=20) == 20
    for _ in range(10):
        limiter.sample(0.100, in_flight=20)
    assert limiter.limit < 10 and limiter.samples == 11


def test_streaming_methods_take_a_place_but_give_no_sample() -> None:
    """A streaming route is limited like any other; its calls' durations are not sampled."""
    clock = FakeClock()
    limiter = ConcurrencyLimit(min_limit=1, max_limit=10, initial_limit=1, clock=clock)
    route = limiter.route("/pkg.S/Watch", streaming=True)
    assert route is not None
    permit = limiter.acquire(route, ())
    assert isinstance(permit, Permit)
    assert isinstance(limiter.acquire(route, ()), ConcurrencyRejection)
    clock.advance(60.0)
    limiter.release(permit)
    assert limiter.in_flight == 0 and limiter.samples == 0
