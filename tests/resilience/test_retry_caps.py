"""retry_with_backoff and retry_sync: no wait over max_delay, whatever the error asks for."""

from __future__ import annotations

import random
import threading

import pytest
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.resilience import retry, retry_sync, retry_with_backoff
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
    (event,) = [x for x in logs if x["event"] == "Max retries exceeded"]
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
