"""The shared attempt core: what every stack's first attempt does with the breaker permit."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import grpc
import pytest
from grpc import aio
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc.client import (
    BreakerSettings,
    ChannelBreaker,
    CircuitState,
    RetryPolicies,
    RetryPolicy,
)
from octollm_grpc.client._aio_interceptors import aio_interceptors
from octollm_grpc.client._interceptors import ResilientInterceptor
from octollm_grpc.client._replay import Replay
from octollm_grpc.client._resilience import Resilience
from octollm_grpc.client._sync_calls import Attempts
from octollm_grpc.observability._client_metrics import ClientMetrics
from octollm_grpc.status import callers_budget, to_status
from octollm_grpc.status._limits import PUSHBACK_KEY
from octollm_grpc.testing import FakeClock


class _StartFailed(Exception):
    """What a continuation raises when the call cannot even start (e.g. a closed channel)."""


def _half_open(clock: FakeClock) -> tuple[ChannelBreaker, Resilience]:
    breaker = ChannelBreaker("attempts:1", BreakerSettings(failure_threshold=1, reset_timeout=1.0,
                                                           half_open_probes=1),
                             clock=clock.now, registry=CollectorRegistry())
    breaker.on_failure(breaker.acquire())
    clock.advance(1.0)
    assert breaker.state is CircuitState.HALF_OPEN
    return breaker, Resilience(retry=None, budget=None, breakers=breaker, clock=clock.now)


def _details(method: str | bytes) -> aio.ClientCallDetails:
    return aio.ClientCallDetails(method, None, None, None, None)


def _never_starts(_details: Any, _request: Any) -> Any:
    raise _StartFailed


async def _never_starts_async(_details: Any, _request: Any) -> Any:
    raise _StartFailed


@pytest.mark.parametrize("shape", [0, 1, 2, 3])
def test_aio_attempt_that_never_started_frees_its_probe_permit(clock: FakeClock,
                                                               shape: int) -> None:
    """An aio call whose first attempt cannot start leaves the half-open probe permit free."""
    breaker, core = _half_open(clock)
    interceptor = aio_interceptors(core)[shape]
    method = ("intercept_unary_unary", "intercept_unary_stream", "intercept_stream_unary",
              "intercept_stream_stream")[shape]

    async def call() -> None:
        with pytest.raises(_StartFailed):
            await getattr(interceptor, method)(_never_starts_async, _details(b"/s/M"), iter(()))

    asyncio.run(call())
    breaker.release(breaker.acquire())  # the permit is free: a probe is admitted again


@pytest.mark.parametrize("method", ["intercept_unary_unary", "intercept_unary_stream",
                                    "intercept_stream_unary", "intercept_stream_stream"])
def test_sync_attempt_that_never_started_frees_its_probe_permit(clock: FakeClock,
                                                                method: str) -> None:
    """A sync call whose first attempt cannot start leaves the half-open probe permit free."""
    breaker, core = _half_open(clock)
    interceptor = ResilientInterceptor(core, clock.sleep)
    with pytest.raises(_StartFailed):
        getattr(interceptor, method)(_never_starts, _details("/s/M"), iter(()))
    breaker.release(breaker.acquire())


# -- the core's verdicts, one attempt at a time ------------------------------------------------


class _Failed(grpc.RpcError):
    """A failed attempt as grpc reports it: a code and trailers."""

    def __init__(self, code: grpc.StatusCode, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        self._code = code
        self._trailers = trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "failed"

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailers


class _SyncDetails(grpc.ClientCallDetails):
    def __init__(self, timeout: float | None) -> None:
        self.method = "/s.S/M"
        self.timeout = timeout
        self.metadata = (("x-caller", "1"),)
        self.credentials = None
        self.wait_for_ready = None
        self.compression = None


def _attempts(clock: FakeClock, policy: RetryPolicy | None, *, timeout: float | None = None,
              retryable: bool = True, breaker: ChannelBreaker | None = None,
              registry: CollectorRegistry | None = None,
              replay: Replay | None = None) -> Attempts:
    core = Resilience(retry=RetryPolicies(policy) if policy else None, budget=None,
                      breakers=breaker, clock=clock.now, rng=random.Random(7),
                      metrics=ClientMetrics(registry) if registry is not None else None)
    return Attempts(core=core, plan=core.plan("/s.S/M"), details=_SyncDetails(timeout),
                    continuation=None, request="req", replay=replay, retryable=retryable,
                    sleep=clock.sleep)


def _closed_breaker(clock: FakeClock, threshold: int = 1) -> ChannelBreaker:
    return ChannelBreaker("attempts:2", BreakerSettings(failure_threshold=threshold),
                          clock=clock.now, registry=CollectorRegistry())


def test_first_attempt_runs_under_the_per_attempt_cap(clock: FakeClock) -> None:
    """A retryable call whose policy caps attempts sends the first under the cap, no header."""
    attempts = _attempts(clock, RetryPolicy(per_attempt_timeout=0.5), timeout=10.0)
    details = attempts.first()
    assert details.timeout == 0.5
    assert details.metadata == (("x-caller", "1"),)
    assert attempts.retry is not None and attempts.retry.capped


def test_first_attempt_of_a_call_that_cannot_retry_keeps_the_callers_timeout(
        clock: FakeClock) -> None:
    """Without retries to come, a cap would only shorten the caller's time: none is applied."""
    attempts = _attempts(clock, RetryPolicy(per_attempt_timeout=0.5), timeout=10.0,
                         retryable=False)
    details = attempts.first()
    assert details.timeout == 10.0 and attempts.retry is None
    uncapped = _attempts(clock, RetryPolicy(), timeout=10.0)
    assert uncapped.first().timeout == 10.0 and uncapped.retry is None


def test_retryable_failure_gives_a_delay_and_the_next_attempt_says_so(clock: FakeClock) -> None:
    """UNAVAILABLE is retried: a backoff delay, then details with the attempts header."""
    attempts = _attempts(clock, RetryPolicy(initial_backoff=0.1, max_backoff=0.1), timeout=1.0)
    attempts.first()
    delay = attempts.delay(_Failed(grpc.StatusCode.UNAVAILABLE))
    assert 0 <= delay <= 0.1
    clock.advance(delay)
    details = attempts.next(_Failed(grpc.StatusCode.UNAVAILABLE))
    assert details.metadata == (("x-caller", "1"), ("grpc-previous-rpc-attempts", "1"))
    assert details.timeout == pytest.approx(1.0 - delay)


@pytest.mark.parametrize("case", ["not retryable", "cancelled", "no policy", "code"])
def test_giving_up_raises_the_typed_error(clock: FakeClock, case: str) -> None:
    """A call that may not go on raises the typed error for the last failure."""
    code = grpc.StatusCode.INVALID_ARGUMENT if case == "code" else grpc.StatusCode.UNAVAILABLE
    attempts = _attempts(clock, None if case == "no policy" else RetryPolicy(),
                         retryable=case != "not retryable")
    attempts.first()
    with pytest.raises(errors.OctoLLMError) as raised:
        attempts.delay(_Failed(code), cancelled=case == "cancelled")
    assert raised.value.code() is code


def test_next_attempt_after_the_deadline_raises_the_last_failure(clock: FakeClock) -> None:
    """When the wait used up the caller's time, no attempt starts: the last error is raised."""
    attempts = _attempts(clock, RetryPolicy(initial_backoff=0.1, max_backoff=0.1), timeout=1.0)
    attempts.first()
    failure = _Failed(grpc.StatusCode.UNAVAILABLE)
    attempts.delay(failure)
    clock.advance(1.0)
    with pytest.raises(errors.OctoLLMError) as raised:
        attempts.next(failure)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


def test_callers_own_deadline_is_no_verdict_on_the_target(clock: FakeClock) -> None:
    """DEADLINE_EXCEEDED when the caller's time ran out frees the permit; it does not trip."""
    breaker = _closed_breaker(clock)
    attempts = _attempts(clock, None, timeout=1.0, breaker=breaker)
    attempts.first()
    clock.advance(1.0)
    with pytest.raises(errors.OctoLLMError):
        attempts.delay(_Failed(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert breaker.state is CircuitState.CLOSED
    early = _attempts(clock, None, timeout=1.0, breaker=breaker)
    early.first()
    with pytest.raises(errors.OctoLLMError):
        early.delay(_Failed(grpc.StatusCode.DEADLINE_EXCEEDED))  # the server's own verdict
    assert breaker.state is CircuitState.OPEN


def test_deadline_the_server_marks_as_the_callers_budget_is_no_verdict(clock: FakeClock) -> None:
    """DEADLINE_EXCEEDED whose trailers carry the caller's-budget mark (the server ran out of
    the caller's time, not its own) frees the permit without tripping; the same code
    without the mark trips."""
    marked = to_status(callers_budget(errors.TimeoutError("task", 1))).trailing_metadata
    breaker = _closed_breaker(clock)
    attempts = _attempts(clock, None, breaker=breaker)
    attempts.first()
    with pytest.raises(errors.OctoLLMError):
        attempts.delay(_Failed(grpc.StatusCode.DEADLINE_EXCEEDED, marked))
    assert breaker.state is CircuitState.CLOSED
    plain = _attempts(clock, None, breaker=breaker)
    plain.first()
    with pytest.raises(errors.OctoLLMError):
        plain.delay(_Failed(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert breaker.state is CircuitState.OPEN


def test_success_and_release_report_to_the_breaker(clock: FakeClock) -> None:
    """succeeded() resets the failure count; release() gives no verdict."""
    breaker = _closed_breaker(clock, threshold=2)
    attempts = _attempts(clock, None, breaker=breaker)
    breaker.on_failure(breaker.acquire())
    attempts.first()
    attempts.succeeded()
    breaker.on_failure(breaker.acquire())
    assert breaker.state is CircuitState.CLOSED  # the success restarted the count
    attempts.first()
    attempts.release()
    assert breaker.state is CircuitState.CLOSED


def test_start_time_is_read_only_for_a_call_with_a_timeout(clock: FakeClock) -> None:
    """The clock is read at the start of a call with a deadline, and not otherwise."""
    clock.advance(5.0)
    assert _attempts(clock, None, timeout=1.0).start == clock.now()
    assert _attempts(clock, None).start == 0.0


def test_first_attempt_cap_never_outlasts_the_callers_deadline(clock: FakeClock) -> None:
    """A cap longer than the caller's time leaves the first attempt the caller's time."""
    attempts = _attempts(clock, RetryPolicy(per_attempt_timeout=0.5), timeout=0.3)
    assert attempts.first().timeout == pytest.approx(0.3)


def test_requests_replay_from_the_start_on_every_attempt(clock: FakeClock) -> None:
    """A replayable request stream is sent whole again; otherwise the caller's request."""
    attempts = _attempts(clock, RetryPolicy(), replay=Replay(iter([1, 2])))
    assert list(attempts.requests()) == [1, 2]
    assert list(attempts.requests()) == [1, 2]
    assert _attempts(clock, RetryPolicy()).requests() == "req"


def test_failure_without_a_deadline_counts_against_the_target(clock: FakeClock) -> None:
    """A call with no timeout: its failure is the target's (the breaker trips at 1)."""
    breaker = _closed_breaker(clock)
    attempts = _attempts(clock, RetryPolicy(), breaker=breaker)
    attempts.first()
    attempts.delay(_Failed(grpc.StatusCode.UNAVAILABLE))
    assert breaker.state is CircuitState.OPEN


def test_capped_attempt_cut_at_the_callers_deadline_is_the_targets_failure(
        clock: FakeClock) -> None:
    """The per-attempt cap ended it, so DEADLINE_EXCEEDED there says the target was slow."""
    breaker = _closed_breaker(clock)
    attempts = _attempts(clock, RetryPolicy(per_attempt_timeout=0.5), timeout=0.505,
                         breaker=breaker)
    assert attempts.first().timeout == 0.5
    clock.advance(0.5)
    with pytest.raises(errors.OctoLLMError):
        attempts.delay(_Failed(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert breaker.state is CircuitState.OPEN


def test_each_failed_attempt_is_counted_by_its_code(clock: FakeClock) -> None:
    """octollm_client_attempts_total counts the failure under its own code."""
    registry = CollectorRegistry()
    attempts = _attempts(clock, RetryPolicy(), registry=registry)
    attempts.first()
    attempts.delay(_Failed(grpc.StatusCode.UNAVAILABLE))
    assert registry.get_sample_value("octollm_client_attempts_total", {
        "grpc_type": "unary", "grpc_service": "s.S", "grpc_method": "M",
        "grpc_code": "Unavailable"}) == 1.0


def test_server_pushback_sets_the_delay(clock: FakeClock) -> None:
    """The server's grpc-retry-pushback-ms is the wait before the next attempt."""
    attempts = _attempts(clock, RetryPolicy())
    attempts.first()
    assert attempts.delay(_Failed(grpc.StatusCode.UNAVAILABLE,
                                  ((PUSHBACK_KEY, "250"),))) == pytest.approx(0.25)


def test_next_attempt_takes_a_breaker_permit(clock: FakeClock) -> None:
    """In half-open, the next attempt holds the one probe permit: another call is refused."""
    breaker = ChannelBreaker("attempts:3", BreakerSettings(failure_threshold=1,
                                                           reset_timeout=1.0),
                             clock=clock.now, registry=CollectorRegistry())
    attempts = _attempts(clock, RetryPolicy(initial_backoff=0.1, max_backoff=0.1),
                         breaker=breaker)
    attempts.first()
    attempts.delay(_Failed(grpc.StatusCode.UNAVAILABLE))  # trips the breaker
    clock.advance(1.0)
    attempts.next(_Failed(grpc.StatusCode.UNAVAILABLE))
    with pytest.raises(errors.CircuitOpenError):
        breaker.acquire()
    attempts.release()
    breaker.release(breaker.acquire())


class _BrokenCall:
    """An aio attempt whose response cannot be read (not a status: e.g. a decoding bug)."""

    cancelled_by_us = False

    async def read(self) -> Any:
        raise RuntimeError("cannot decode")

    def __await__(self) -> Any:
        raise RuntimeError("cannot decode")
        yield  # makes this a generator, as __await__ must be

    def cancel(self) -> bool:
        self.cancelled_by_us = True
        return True


@pytest.mark.parametrize("shape", [1, 2])
def test_aio_attempt_failing_without_a_status_frees_its_probe_permit(clock: FakeClock,
                                                                     shape: int) -> None:
    """A response stream or client stream whose attempt fails with a non-status error
    cancels the attempt and frees the half-open probe permit (no verdict on the server)."""
    breaker, core = _half_open(clock)
    interceptor = aio_interceptors(core)[shape]
    broken = _BrokenCall()

    async def start(_details: Any, _request: Any) -> Any:
        return broken

    async def call() -> None:
        if shape == 1:
            stream = await interceptor.intercept_unary_stream(start, _details(b"/s/M"), None)
            with pytest.raises(RuntimeError):
                await stream.read()
        else:
            pending = await interceptor.intercept_stream_unary(start, _details(b"/s/M"),
                                                               iter(()))
            with pytest.raises(RuntimeError):
                await pending

    asyncio.run(call())
    assert broken.cancelled_by_us
    breaker.release(breaker.acquire())  # the permit is free: a probe is admitted again
