"""The deadline each attempt carries: the caller's remaining time, capped per attempt.

The server records ``context.time_remaining()`` on every attempt, so these tests check the
deadline that really went over the wire. Backoff and pushback waits run on a fake clock (the
calls' budget shrinks by them) while the network runs in real time, so each expected value is
checked within a margin (:data:`SLACK`) far smaller than the gaps between the values compared.
"""

from __future__ import annotations

import pytest

from octollm_grpc import errors
from octollm_grpc.client import RetryPolicy
from octollm_grpc.status._limits import PUSHBACK_KEY
from octollm_grpc.testing import FakeClock
from tests.client.backend import FAIL, SUCCEED, UNARY, UNAVAILABLE, Backend, Reply
from tests.client.channels import aio_channel, sync_channel
from tests.servers import sync_server

SLACK = 3.0  # real seconds a loaded machine may take between sending and the server's reading
OVER = 1.05  # grpc-timeout rounds a deadline up (whole seconds for timeouts of minutes)


def _pushback(seconds: float) -> Reply:
    return Reply(UNAVAILABLE, trailers=((PUSHBACK_KEY, str(int(seconds * 1000))),), messages=0)


def _close(actual: float | None, expected: float) -> bool:
    return actual is not None and expected - SLACK < actual <= expected + OVER


# Each case: the policy's per-attempt cap, the caller's timeout, what the server answers, and
# the deadline each attempt must carry (None: no deadline at all).
CASES = {
    # No caller timeout: every attempt gets the cap, the first and each retry.
    "cap_without_caller_timeout": (20.0, None, [FAIL, FAIL, SUCCEED], [20.0, 20.0, 20.0]),
    # Neither: no attempt has a deadline.
    "no_deadline_at_all": (None, None, [FAIL, SUCCEED], [None, None]),
    # The caller's 100 s, a 20 s wait between: 100, then what is left (80).
    "caller_timeout_shrinks_by_the_wait": (None, 100.0, [_pushback(20), SUCCEED], [100.0, 80.0]),
    # Cap 30 under 100 s: 30 while more is left; after a 80 s wait only 20 is left, not 30.
    "cap_then_what_is_left": (30.0, 100.0, [_pushback(80), SUCCEED], [30.0, 20.0]),
}


def _policy(cap: float | None) -> RetryPolicy:
    # max_pushback above the cases' 80 s pushback (the default, 30 s, would stop the retry).
    return RetryPolicy(max_attempts=5, per_attempt_timeout=cap, initial_backoff=0.1,
                       max_backoff=0.1, max_pushback=120.0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_sync_each_attempt_carries_its_deadline(clock: FakeClock, case: str) -> None:
    """Sync: each attempt's deadline is min(cap, caller's time left), as the server sees it."""
    cap, timeout, script, expected = CASES[case]
    backend = Backend(script, clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, retry=_policy(cap))
        assert channel.unary_unary(UNARY)(b"x", timeout=timeout) == b"ok"
    _check(backend.deadlines(), expected)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_aio_each_attempt_carries_its_deadline(clock: FakeClock, case: str) -> None:
    """Aio: each attempt's deadline is min(cap, caller's time left), as the server sees it."""
    cap, timeout, script, expected = CASES[case]
    backend = Backend(script, clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, retry=_policy(cap)) as channel:
            assert await channel.unary_unary(UNARY)(b"x", timeout=timeout) == b"ok"
    _check(backend.deadlines(), expected)


def _check(deadlines: list[float | None], expected: list[float | None]) -> None:
    assert len(deadlines) == len(expected)
    for actual, wanted in zip(deadlines, expected, strict=True):
        if wanted is None:
            assert actual is None
        else:
            assert _close(actual, wanted), (deadlines, expected)


def test_sync_wait_that_leaves_no_time_sends_no_attempt(clock: FakeClock) -> None:
    """Sync: a wait ending exactly at the deadline gives up with the last error, sends nothing."""
    backend = Backend([_pushback(10), SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, retry=_policy(None))
        with pytest.raises(errors.NetworkError):
            channel.unary_unary(UNARY)(b"x", timeout=10)
    assert backend.count() == 1
    assert clock.sleeps == []
