"""octollm_grpc.resilience.CircuitBreaker: the seed's breaker on the gRPC client's core."""

from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.resilience import CircuitBreaker, CircuitState
from octollm_grpc.testing import FakeClock


class Flaky:
    """A real async and sync callable that fails while ``failing`` is set, counting calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = True

    async def fetch(self, prompt: str, *, suffix: str = "") -> str:
        self.calls += 1
        await asyncio.sleep(0)
        if self.failing:
            raise errors.LLMAPIError("openai", status_code=503, error_message="overloaded")
        return prompt + suffix

    def fetch_sync(self, prompt: str) -> str:
        self.calls += 1
        if self.failing:
            raise errors.LLMAPIError("openai", status_code=503, error_message="overloaded")
        return prompt


def _gauge(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("octollm_client_circuit_state",
                                     {"target": name, "method": ""})


def test_states_carry_the_seed_values_and_the_gauge_keeps_its_numbers() -> None:
    """CircuitState values are the seed's strings; the gauge still reports 0 / 1 / 2."""
    assert [s.value for s in CircuitState] == ["closed", "half_open", "open"]
    assert [s.gauge for s in CircuitState] == [0, 1, 2]
    assert CircuitState("half_open") is CircuitState.HALF_OPEN


async def test_opens_after_threshold_and_fails_fast_without_calling() -> None:
    """N expected failures open it; then CircuitOpenError with retry_after, fn not called."""
    clock, registry, flaky = FakeClock(), CollectorRegistry(), Flaky()
    cb = CircuitBreaker(failure_threshold=3, timeout=60, expected_exception=errors.LLMAPIError,
                        name="llm", clock=clock, registry=registry)
    assert cb.state is CircuitState.CLOSED and _gauge(registry, "llm") == 0
    with capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(errors.LLMAPIError):
                await cb.call(flaky.fetch, "hi")
    assert cb.state is CircuitState.OPEN and cb.state.value == "open"
    assert _gauge(registry, "llm") == 2
    assert [e["to_state"] for e in logs if e["event"] == "circuit_breaker_state_changed"] == [
        "open"]
    clock.advance(15)
    with pytest.raises(errors.CircuitOpenError) as caught:
        await cb.call(flaky.fetch, "hi")
    assert flaky.calls == 3
    assert caught.value.retry_after == pytest.approx(45)
    assert registry.get_sample_value("octollm_client_circuit_rejected_total",
                                     {"target": "llm", "method": ""}) == 1


async def test_half_open_success_closes_and_passes_args_and_kwargs() -> None:
    """After the timeout one probe runs with the caller's args; its success closes the breaker."""
    clock, flaky = FakeClock(), Flaky()
    cb = CircuitBreaker(1, 10, errors.LLMAPIError, clock=clock, registry=CollectorRegistry())
    with pytest.raises(errors.LLMAPIError):
        await cb.call(flaky.fetch, "x")
    clock.advance(10)
    assert cb.state is CircuitState.HALF_OPEN
    flaky.failing = False
    assert await cb.call(flaky.fetch, "a", suffix="b") == "ab"
    assert cb.state is CircuitState.CLOSED


async def test_only_expected_exception_counts() -> None:
    """Other exceptions pass through unchanged and never trip the breaker."""
    cb = CircuitBreaker(2, 60, errors.LLMAPIError, clock=FakeClock(),
                        registry=CollectorRegistry())

    async def bad_request() -> None:
        raise errors.ValidationError("prompt too long", field="prompt")

    for _ in range(5):
        with pytest.raises(errors.ValidationError):
            await cb.call(bad_request)
    assert cb.state is CircuitState.CLOSED


async def test_exactly_n_half_open_probes_run_concurrently() -> None:
    """Half-open with half_open_probes=2: of 5 concurrent calls 2 run, 3 fail fast."""
    clock = FakeClock()
    cb = CircuitBreaker(1, 5, RuntimeError, half_open_probes=2, clock=clock,
                        registry=CollectorRegistry())

    async def boom() -> None:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        await cb.call(boom)
    clock.advance(5)
    release = asyncio.Event()
    started: list[int] = []

    async def slow(i: int) -> int:
        started.append(i)
        await release.wait()
        return i

    tasks = [asyncio.ensure_future(cb.call(slow, i)) for i in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert started == [0, 1]
    assert results[:2] == [0, 1]
    assert all(isinstance(r, errors.CircuitOpenError) for r in results[2:])
    assert cb.state is CircuitState.CLOSED  # both probes succeeded


async def test_a_probe_failing_with_another_exception_frees_its_permit() -> None:
    """An unexpected exception in half-open gives no verdict: the next call may probe."""
    clock, flaky = FakeClock(), Flaky()
    cb = CircuitBreaker(1, 5, errors.LLMAPIError, clock=clock, registry=CollectorRegistry())
    with pytest.raises(errors.LLMAPIError):
        await cb.call(flaky.fetch, "x")
    clock.advance(5)

    async def bug() -> None:
        raise KeyError("oops")

    with pytest.raises(KeyError):
        await cb.call(bug)
    assert cb.state is CircuitState.HALF_OPEN
    flaky.failing = False
    assert await cb.call(flaky.fetch, "ok") == "ok"
    assert cb.state is CircuitState.CLOSED


async def test_decorates_async_and_sync_functions() -> None:
    """``@cb`` keeps the function's kind and name; both kinds share one breaker."""
    flaky = Flaky()
    cb = CircuitBreaker(2, 30, errors.LLMAPIError, clock=FakeClock(),
                        registry=CollectorRegistry())
    fetch = cb(flaky.fetch)
    fetch_sync = cb(flaky.fetch_sync)
    assert asyncio.iscoroutinefunction(fetch) and not asyncio.iscoroutinefunction(fetch_sync)
    assert fetch.__name__ == "fetch"
    with pytest.raises(errors.LLMAPIError):
        await fetch("a")
    with pytest.raises(errors.LLMAPIError):
        fetch_sync("a")
    with pytest.raises(errors.CircuitOpenError):
        fetch_sync("a")
    with pytest.raises(errors.CircuitOpenError):
        await fetch("a")
    assert flaky.calls == 2


def test_no_lock_is_held_while_the_function_runs() -> None:
    """A guarded call may use the same breaker inside it (a held lock would deadlock)."""
    clock = FakeClock()
    cb = CircuitBreaker(1, 5, RuntimeError, clock=clock, registry=CollectorRegistry())

    @cb
    def inner() -> str:
        return "inner"

    @cb
    def outer() -> str:
        return f"{cb.state.value}:{inner()}"

    @cb
    def fail() -> None:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        fail()
    clock.advance(5)  # half-open, one permit: outer holds it, inner is rejected, not blocked
    results: list[object] = []

    def run() -> None:
        try:
            results.append(outer())
        except Exception as error:
            results.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert isinstance(results[0], errors.CircuitOpenError)


def test_rejects_bad_settings() -> None:
    """The seed's constructor is validated by the shared settings."""
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="timeout"):
        CircuitBreaker(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        CircuitBreaker(timeout=float("inf"))
    with pytest.raises(ValueError, match="half_open_probes"):
        CircuitBreaker(half_open_probes=0)


def test_call_runs_a_plain_function_at_once_even_without_await() -> None:
    """breaker.call(sync_fn) calls it inside call() and records its verdict; no coroutine is
    left unawaited, and awaiting the result gives the return value."""
    flaky = Flaky()
    flaky.failing = False
    cb = CircuitBreaker(failure_threshold=1, timeout=5, name="sync-call",
                        registry=CollectorRegistry(), clock=FakeClock().now)
    pending = cb.call(flaky.fetch_sync, "now")
    assert flaky.calls == 1  # ran before any await
    assert asyncio.run(_await(pending)) == "now"
    flaky.failing = True
    with pytest.raises(errors.LLMAPIError):
        cb.call(flaky.fetch_sync, "boom")  # raised at once, not deferred to an await
    assert cb.state is CircuitState.OPEN
    with pytest.raises(errors.CircuitOpenError):
        cb.call(flaky.fetch_sync, "refused")
    assert flaky.calls == 2


async def _await(pending: object) -> object:
    return await pending  # type: ignore[misc]


async def test_call_of_a_lambda_around_a_coroutine_judges_the_awaited_outcome() -> None:
    """A plain callable returning an awaitable: the breaker judges what the awaitable gives."""
    flaky = Flaky()
    cb = CircuitBreaker(failure_threshold=1, timeout=5, name="lambda-call",
                        registry=CollectorRegistry(), clock=FakeClock().now)
    with pytest.raises(errors.LLMAPIError):
        await cb.call(lambda: flaky.fetch("x"))
    assert cb.state is CircuitState.OPEN


async def test_call_of_an_object_with_async_call_is_awaited_lazily() -> None:
    """An object whose class defines ``async def __call__`` runs only when awaited."""

    class Fetch:
        def __init__(self) -> None:
            self.calls = 0

        async def __call__(self) -> str:
            self.calls += 1
            return "ok"

    fetch = Fetch()
    cb = CircuitBreaker(name="async-callable", registry=CollectorRegistry())
    pending = cb.call(fetch)
    assert fetch.calls == 0
    assert await pending == "ok" and fetch.calls == 1
