"""The seed's ``retry_with_backoff``, rewritten here as the "naive retries" storm baseline.

Faithful to ``seed/error-handling-patterns.md``: ``max_retries`` retries after the first
attempt, delay ``min(base_delay * exponential_base ** attempt, max_delay)`` times a jitter factor
drawn from [0.5, 1.0), and no budget, no breaker, no deadline across attempts. Only its two log
calls are left out (they change nothing about when attempts are sent).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def retry_with_backoff(
    func: Callable[[], Awaitable[T]],
    max_retries: int = 3,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    exponential_base: float = 2.0,
    jitter: bool = True,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Await ``func()`` until it succeeds or ``max_retries`` retries have failed."""
    last_exception: BaseException | None = None
    for attempt in range(max_retries + 1):
        try:
            return await func()
        except retry_on as exc:
            last_exception = exc
            if attempt == max_retries:
                raise
            delay = min(base_delay * (exponential_base ** attempt), max_delay)
            if jitter:
                delay = delay * (0.5 + random.random() * 0.5)
            await asyncio.sleep(delay)
    assert last_exception is not None
    raise last_exception
