"""retry_with_backoff and @retry: the seed's loop on the gRPC client's backoff core."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.client import RetryBudget
from octollm_grpc.resilience import CircuitBreaker, retry, retry_with_backoff
from octollm_grpc.testing import FakeClock
from tests.resilience.llm_api import serve_llm_api


class Script:
    """An async (and sync) function that raises the scripted errors, then returns "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        await asyncio.sleep(0)
        return self.sync()

    def sync(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def _unavailable() -> errors.LLMAPIError:
    return errors.LLMAPIError("openai", status_code=503, error_message="overloaded")


def _events(logs: list[dict[str, object]], event: str) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == event]


async def test_retries_with_full_jitter_from_the_injected_random_source() -> None:
    """Delays are uniform in [0, base * 2**(n-1)], drawn from rng; each retry is logged."""
    clock, script = FakeClock(), Script(_unavailable(), _unavailable(), _unavailable())
    with capture_logs() as logs:
        result = await retry_with_backoff(script, max_retries=3, base_delay=1.0,
                                          sleep=clock.async_sleep, rng=random.Random(7))
    assert result == "ok" and script.calls == 4
    replica = random.Random(7)
    assert clock.sleeps == [replica.uniform(0, 1), replica.uniform(0, 2), replica.uniform(0, 4)]
    retries = _events(logs, "resilience.retry.retrying")
    assert [(e["attempt"], e["log_level"], e["error_type"]) for e in retries] == [
        (1, "warning", "LLM_API_ERROR"), (2, "warning", "LLM_API_ERROR"),
        (3, "warning", "LLM_API_ERROR")]
    assert [e["delay"] for e in retries] == clock.sleeps


async def test_without_jitter_delays_are_the_capped_exponential_ceiling() -> None:
    """jitter=False waits base * exponential_base ** (n-1), capped at max_delay."""
    clock = FakeClock()
    script = Script(*[_unavailable() for _ in range(4)])
    await retry_with_backoff(script, max_retries=4, base_delay=2.0, max_delay=10.0,
                             exponential_base=3.0, jitter=False, sleep=clock.async_sleep)
    assert clock.sleeps == [2.0, 6.0, 10.0, 10.0]


async def test_gives_up_after_max_retries_with_the_last_error() -> None:
    """max_retries + 1 attempts, then "resilience.retry.gave_up" at error and the last error."""
    clock = FakeClock()
    last = _unavailable()
    script = Script(_unavailable(), _unavailable(), last)
    with capture_logs() as logs, pytest.raises(errors.LLMAPIError) as caught:
        await retry_with_backoff(script, max_retries=2, sleep=clock.async_sleep)
    assert caught.value is last and script.calls == 3
    [given_up] = _events(logs, "resilience.retry.gave_up")
    assert given_up["log_level"] == "error"
    assert given_up["attempt"] == 3 and given_up["reason"] == "attempts"


async def test_non_retryable_octollm_errors_are_never_retried() -> None:
    """A ValidationError is raised at once even though retry_on=(Exception,)."""
    clock = FakeClock()
    script = Script(errors.ValidationError("bad prompt", field="prompt"))
    with capture_logs() as logs, pytest.raises(errors.ValidationError):
        await retry_with_backoff(script, retry_on=(Exception,), sleep=clock.async_sleep)
    assert script.calls == 1 and clock.sleeps == [] and logs == []


async def test_errors_outside_retry_on_propagate_at_once() -> None:
    """Only retry_on errors are retried."""
    clock = FakeClock()
    script = Script(KeyError("x"))
    with pytest.raises(KeyError):
        await retry_with_backoff(script, retry_on=(errors.LLMAPIError,),
                                 sleep=clock.async_sleep)
    assert script.calls == 1


async def test_retry_after_of_the_error_sets_the_next_delay() -> None:
    """A RateLimitError's retry_after is the wait, without jitter."""
    clock = FakeClock()
    script = Script(errors.RateLimitError(limit=10, window=60, retry_after=7))
    assert await retry_with_backoff(script, sleep=clock.async_sleep) == "ok"
    assert clock.sleeps == [7.0]


async def test_an_open_breakers_retry_after_is_waited_out() -> None:
    """Retry around a breaker waits until it half-opens, then the probe succeeds."""
    clock = FakeClock()
    breaker = CircuitBreaker(1, 30, errors.LLMAPIError, clock=clock)
    script = Script(_unavailable())
    result = await retry_with_backoff(lambda: breaker.call(script), base_delay=1.0,
                                      jitter=False, sleep=clock.async_sleep)
    assert result == "ok"
    assert clock.sleeps == [1.0, 29.0]  # backoff, then the breaker's retry_after
    assert script.calls == 2


async def test_deadline_stops_a_retry_that_would_end_past_it() -> None:
    """With deadline=5 the 4 s wait after the third failure would pass it: give up."""
    clock = FakeClock()
    script = Script(*[_unavailable() for _ in range(5)])
    with capture_logs() as logs, pytest.raises(errors.LLMAPIError):
        await retry_with_backoff(script, max_retries=5, jitter=False, deadline=5.0,
                                 sleep=clock.async_sleep, clock=clock)
    assert clock.sleeps == [1.0, 2.0] and script.calls == 3
    assert _events(logs, "resilience.retry.gave_up")[0]["reason"] == "deadline"


async def test_a_drained_retry_budget_stops_retries() -> None:
    """The client's RetryBudget: once half its tokens are gone, no more retries."""
    clock = FakeClock()
    budget = RetryBudget(max_tokens=4, token_ratio=1)
    script = Script(*[_unavailable() for _ in range(5)])
    with capture_logs() as logs, pytest.raises(errors.LLMAPIError):
        await retry_with_backoff(script, max_retries=5, budget=budget, sleep=clock.async_sleep)
    assert script.calls == 2  # 4 -> 3 (retry), 3 -> 2 (not above half: stop)
    assert _events(logs, "resilience.retry.gave_up")[0]["reason"] == "budget"
    assert await retry_with_backoff(Script(), budget=budget) == "ok"
    assert budget.tokens == 3


async def test_retry_decorator_on_async_and_sync_functions() -> None:
    """@retry keeps the function's kind and name, and passes its arguments on each attempt."""
    clock = FakeClock()
    seen: list[str] = []
    failures = [_unavailable(), _unavailable()]

    @retry(max_retries=3, sleep=clock.async_sleep)
    async def complete(prompt: str) -> str:
        seen.append(prompt)
        if failures:
            raise failures.pop()
        return prompt.upper()

    @retry(max_retries=1, sleep=clock.sleep)
    def complete_sync(prompt: str) -> str:
        seen.append(prompt)
        raise _unavailable()

    assert asyncio.iscoroutinefunction(complete) and complete.__name__ == "complete"
    with capture_logs() as logs:
        assert await complete("hi") == "HI"
        with pytest.raises(errors.LLMAPIError):
            complete_sync("sync")
    assert seen == ["hi", "hi", "hi", "sync", "sync"]
    assert {e["function"] for e in logs} == {"test_retry_decorator_on_async_and_sync_functions"
                                             ".<locals>.complete",
                                             "test_retry_decorator_on_async_and_sync_functions"
                                             ".<locals>.complete_sync"}
    assert len(clock.sleeps) == 3


def test_bad_settings_fail_when_decorating() -> None:
    """Negative retries or delays are rejected up front."""
    with pytest.raises(ValueError, match="max_retries"):
        retry(max_retries=-1)
    with pytest.raises(ValueError, match="base_delay"):
        retry(base_delay=-1.0)


async def test_retries_a_real_http_llm_api_until_it_answers() -> None:
    """Two 503s from a real local HTTP server, then the answer; 3 requests reach it."""
    clock = FakeClock()
    with serve_llm_api() as api:
        api.fail_next(2)
        async with httpx.AsyncClient(base_url=api.url) as client:

            async def complete() -> str:
                response = await client.post("/v1/complete", json={"prompt": "hello"})
                response.raise_for_status()
                return str(response.json()["text"])

            text = await retry_with_backoff(complete, retry_on=(httpx.HTTPStatusError,),
                                            sleep=clock.async_sleep, rng=random.Random(1))
    assert text == "echo: hello"
    assert api.requests == 3 and len(clock.sleeps) == 2
