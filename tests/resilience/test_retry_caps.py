"""retry_with_backoff and retry_sync: no wait over max_delay, whatever the error asks for."""

from __future__ import annotations

import random
import threading

import pytest
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.resilience import retry, retry_with_backoff
from octollm_grpc.resilience._retry import _retry_blocking as retry_sync
from octollm_grpc.testing import FakeClock
from tests.resilience.test_retry import Script

THIRTY_DAYS = 30 * 86_400.0


def _limited(retry_after: float) -> errors.RateLimitError:
    return errors.RateLimitError(limit=10, window=60, retry_after=retry_after)


async def test_a_retry_after_over_max_delay_gives_up_at_once() -> None:
    """30 days asked, max_delay=1: the error is re-raised now, nothing slept, reason logged."""
    clock = FakeClock()
    script = Script(_limited(THIRTY_DAYS))
    with capture_logs() as logs, pytest.raises(errors.RateLimitError) as caught:
        await retry_with_backoff(script, max_delay=1, sleep=clock.async_sleep)
    assert caught.value.retry_after == THIRTY_DAYS
    assert clock.sleeps == [] and script.calls == 1
    (event,) = [x for x in logs if x["event"] == "resilience.retry.gave_up"]
    assert event["reason"] == "retry_after" and event["retry_after"] == THIRTY_DAYS
    assert event["function"] == "Script" and event["attempt"] == 1
    assert event["error_type"] == "RATE_LIMIT_EXCEEDED" and event["log_level"] == "error"


async def test_a_retry_after_at_max_delay_is_waited() -> None:
    """Exactly max_delay is within the cap: waited, then the call succeeds."""
    clock = FakeClock()
    script = Script(_limited(5))
    assert await retry_with_backoff(script, max_delay=5, sleep=clock.async_sleep) == "ok"
    assert clock.sleeps == [5.0]


def test_retry_sync_with_a_huge_retry_after_raises_the_error_not_overflow() -> None:
    """1e12 s asked with the real time.sleep: the RateLimitError comes back, no OverflowError."""
    script = Script(_limited(1e12))
    with pytest.raises(errors.RateLimitError) as caught:
        retry_sync(script.sync)  # default max_delay=60, real time.sleep
    assert caught.value.retry_after == 1e12
    script = Script(_limited(float("inf")))
    with pytest.raises(errors.RateLimitError):
        retry_sync(script.sync)


def test_max_delay_must_be_sleepable() -> None:
    """A max_delay time.sleep cannot take (or NaN, or negative) is refused when configured."""
    for bad in (1e12, float("inf"), float("nan"), -1):
        with pytest.raises(ValueError, match="max_delay"):
            retry(max_delay=bad)
        with pytest.raises(ValueError, match="max_delay"):
            retry_sync(Script().sync, max_delay=bad)
    retry(max_delay=threading.TIMEOUT_MAX)
    retry(max_delay=0, base_delay=0)


async def test_backoff_never_exceeds_max_delay_below_base_delay() -> None:
    """base_delay=4, max_delay=1: each backoff is at most 1 s (the seed's min(...) formula)."""
    clock = FakeClock()
    failures = [errors.LLMAPIError("x", status_code=503) for _ in range(3)]
    assert await retry_with_backoff(Script(*failures), base_delay=4, max_delay=1, jitter=False,
                                    sleep=clock.async_sleep) == "ok"
    assert clock.sleeps == [1.0, 1.0, 1.0]
    clock = FakeClock()
    failures = [errors.LLMAPIError("x", status_code=503) for _ in range(3)]
    assert await retry_with_backoff(Script(*failures), base_delay=4, max_delay=1,
                                    rng=random.Random(5), sleep=clock.async_sleep) == "ok"
    assert len(clock.sleeps) == 3 and all(0 <= s <= 1.0 for s in clock.sleeps)


async def test_every_log_field_of_a_retry_and_of_giving_up() -> None:
    """Retrying and giving up log the function, attempt, delay or reason, error and its type."""
    clock = FakeClock()
    script = Script(KeyError("gone"), KeyError("still gone"))
    with capture_logs() as logs, pytest.raises(KeyError):
        await retry_with_backoff(script, max_retries=1, base_delay=2, jitter=False,
                                 sleep=clock.async_sleep)
    assert logs == [
        {"event": "resilience.retry.retrying", "log_level": "warning", "function": "Script",
         "attempt": 1, "delay": 2.0, "error": "'gone'", "error_type": "KeyError"},
        {"event": "resilience.retry.gave_up", "log_level": "error", "function": "Script",
         "attempt": 2, "reason": "attempts", "error": "'still gone'", "error_type": "KeyError"},
    ]


def test_retry_sync_retries_with_the_same_rules() -> None:
    """retry_sync: jittered waits from rng within the ceiling, attempts counted, result returned."""
    clock = FakeClock()
    script = Script(OSError("1"), OSError("2"))
    assert retry_sync(script.sync, max_retries=2, base_delay=1, exponential_base=3,
                      rng=random.Random(3), sleep=clock.sleep) == "ok"
    replica = random.Random(3)
    assert clock.sleeps == [replica.uniform(0, 1), replica.uniform(0, 3)]
    assert script.calls == 3


def test_retry_sync_deadline_and_budget() -> None:
    """retry_sync stops at the deadline (on its clock) and spends the budget on success."""
    from octollm_grpc.client import RetryBudget

    clock = FakeClock()
    script = Script(OSError("1"), OSError("2"))
    with capture_logs() as logs, pytest.raises(OSError, match="2"):
        retry_sync(script.sync, base_delay=4, jitter=False, deadline=5, sleep=clock.sleep,
                   clock=clock.now)
    assert clock.sleeps == [4.0]
    assert logs[-1]["reason"] == "deadline"
    budget = RetryBudget(max_tokens=4, token_ratio=0.5)
    before = budget.tokens
    assert retry_sync(Script().sync, budget=budget) == "ok"
    assert budget.tokens == min(before + 0.5, 4)


async def test_zero_base_delay_retries_at_once_and_deadline_is_checked() -> None:
    """base_delay=0: no wait between attempts; deadline must be positive."""
    clock = FakeClock()
    script = Script(OSError("1"), OSError("2"))
    assert await retry_with_backoff(script, base_delay=0, sleep=clock.async_sleep) == "ok"
    assert clock.sleeps == [0.0, 0.0]
    with pytest.raises(ValueError, match="deadline must be positive, not 0"):
        await retry_with_backoff(Script(), deadline=0)
    with pytest.raises(ValueError, match=r"max_retries must be an int >= 0, not True"):
        await retry_with_backoff(Script(), max_retries=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_retries must be an int >= 0, not 1.5"):
        retry_sync(Script().sync, max_retries=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"base_delay must not be negative, not -0.5"):
        retry(base_delay=-0.5)
    assert await retry_with_backoff(Script(), max_retries=0) == "ok"


async def test_a_negative_or_boolean_retry_after_is_no_advice() -> None:
    """retry_after of -1, True or a string is ignored: the backoff decides."""
    clock = FakeClock()

    class Odd(Exception):
        def __init__(self, retry_after: object) -> None:
            super().__init__("odd")
            self.retry_after = retry_after

    script = Script(Odd(-1), Odd(True), Odd("5"))
    assert await retry_with_backoff(script, base_delay=1, jitter=False,
                                    sleep=clock.async_sleep) == "ok"
    assert clock.sleeps == [1.0, 2.0, 4.0]
    script = Script(Odd(0), Odd(3))
    clock = FakeClock()
    assert await retry_with_backoff(script, sleep=clock.async_sleep) == "ok"
    assert clock.sleeps == [0.0, 3.0]


async def test_the_decorator_passes_every_option() -> None:
    """@retry(...) hands each option to the loop: retries, delays, jitter, retry_on, rng."""
    clock = FakeClock()
    calls: list[int] = []

    @retry(max_retries=2, base_delay=3, max_delay=5, exponential_base=4, jitter=False,
           retry_on=(OSError,), sleep=clock.async_sleep, clock=clock.now, deadline=100)
    async def flaky(n: int) -> int:
        calls.append(n)
        if len(calls) < 3:
            raise OSError("again")
        return n * 2

    assert await flaky(21) == 42
    assert clock.sleeps == [3.0, 5.0]

    @retry(retry_on=(OSError,), sleep=clock.sleep)
    def not_retried() -> None:
        calls.append(0)
        raise KeyError("no")

    with pytest.raises(KeyError):
        not_retried()
    assert calls[-1] == 0 and calls.count(0) == 1

    @retry(max_retries=1, rng=random.Random(9), sleep=clock.sleep)
    def jittered() -> None:
        raise OSError("x")

    clock.sleeps.clear()
    with pytest.raises(OSError):
        jittered()
    assert clock.sleeps == [random.Random(9).uniform(0, 1)]


def test_a_call_object_without_qualname_is_named_by_its_type() -> None:
    """A callable object is logged by __name__ or, without one, its class name."""
    class Job:
        def __call__(self) -> str:
            raise OSError("x")

    with capture_logs() as logs, pytest.raises(OSError):
        retry_sync(Job(), max_retries=0)
    assert logs[-1]["function"] == "Job"


def test_retry_sync_defaults_are_the_seeds() -> None:
    """Defaults: 3 retries, 1 s base, doubling, 60 s cap (60 waited, 60.5 not), budget used."""
    from octollm_grpc.client import RetryBudget

    clock = FakeClock()
    script = Script(*[OSError(str(n)) for n in range(4)])
    with pytest.raises(OSError, match="3"):
        retry_sync(script.sync, jitter=False, sleep=clock.sleep)
    assert script.calls == 4 and clock.sleeps == [1.0, 2.0, 4.0]
    clock = FakeClock()
    assert retry_sync(Script(_limited(60)).sync, sleep=clock.sleep) == "ok"
    assert clock.sleeps == [60.0]
    with pytest.raises(errors.RateLimitError):
        retry_sync(Script(_limited(60.5)).sync, sleep=clock.sleep)
    budget = RetryBudget(max_tokens=4, token_ratio=0.5)
    for _ in range(3):
        budget.on_failure()
    drained = budget.tokens
    assert retry_sync(Script().sync, budget=budget) == "ok"
    assert budget.tokens == drained + 0.5


def test_retry_decorator_defaults_and_checks() -> None:
    """@retry(): the same defaults; a bad deadline fails at decoration; kwargs are passed."""
    clock = FakeClock()
    seen: list[dict[str, object]] = []

    @retry(jitter=False, sleep=clock.sleep)
    def always(**kwargs: object) -> None:
        seen.append(kwargs)
        raise OSError("x")

    with pytest.raises(OSError):
        always(a=1)
    assert seen == [{"a": 1}] * 4 and clock.sleeps == [1.0, 2.0, 4.0]

    @retry(sleep=clock.sleep)
    def limited() -> str:
        if len(clock.sleeps) < 4:
            raise _limited(60)
        return "ok"

    assert limited() == "ok" and clock.sleeps[-1] == 60.0

    @retry(sleep=clock.sleep)
    def too_long() -> None:
        raise _limited(60.5)

    with pytest.raises(errors.RateLimitError):
        too_long()
    with pytest.raises(ValueError, match="deadline must be positive"):
        retry(deadline=-1)
