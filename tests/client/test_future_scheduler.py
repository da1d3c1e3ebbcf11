"""Sync ``.future()`` retries share one scheduler thread, not a thread per retry."""

from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry

from octollm_grpc.client import RetryPolicy, resilient_channel
from tests.client.backend import FAIL, SUCCEED, UNARY, Backend
from tests.servers import sync_server

FUTURES = 20
BACKOFF = 0.3


class _LongestBackoff(random.Random):
    """Full jitter always at its ceiling: every retry waits the whole backoff."""

    def uniform(self, a: float, b: float) -> float:
        return b


def _retry_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("octollm-grpc-retry")]


def test_concurrent_future_retries_share_one_thread() -> None:
    """Twenty futures in their backoff at once: one retry thread, and all of them succeed."""
    backend = Backend([FAIL] * FUTURES + [SUCCEED])
    policy = RetryPolicy(max_attempts=2, initial_backoff=BACKOFF, max_backoff=BACKOFF)
    with sync_server([backend.handler()], workers=FUTURES) as target, resilient_channel(
            target, retry=policy, budget=None, breaker=None, rng=_LongestBackoff(),
            registry=CollectorRegistry()) as channel:
        futures = [channel.unary_unary(UNARY).future(b"x", timeout=30) for _ in range(FUTURES)]
        seen = 0
        for _ in range(1000):  # bounded: until every first attempt has failed
            seen = max(seen, len(_retry_threads()))
            if backend.count() >= FUTURES:
                break
            threading.Event().wait(0.002)
        seen = max(seen, len(_retry_threads()))
        results = [future.result(10) for future in futures]
    assert results == [b"ok"] * FUTURES
    assert backend.count() == 2 * FUTURES
    assert seen == 1
