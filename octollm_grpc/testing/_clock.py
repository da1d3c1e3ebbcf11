"""A fake monotonic clock, so tests of timing behaviour never wait for real.

``FakeClock`` is a monotonic clock whose ``sleep`` (sync) and ``async_sleep`` (asyncio) advance
time instantly and record each wait, so retry, breaker and rate-limit behaviour is tested
deterministically in milliseconds.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A monotonic clock for tests: ``now()`` only moves when told to, or when slept on.

    Pass ``clock.now`` wherever a ``clock`` is taken, ``clock.sleep`` / ``clock.async_sleep``
    wherever a ``sleep`` is taken. Thread-safe.

    Args:
        start: The time it starts at, in seconds.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []
        """Every duration passed to ``sleep``/``async_sleep``, in order."""

    def now(self) -> float:
        """The current time in seconds."""
        with self._lock:
            return self._now

    __call__ = now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the wait and advance time by it, returning at once."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    async def async_sleep(self, seconds: float) -> None:
        """The asyncio form of `sleep` (yields to the loop once)."""
        self.sleep(seconds)
        await asyncio.sleep(0)
