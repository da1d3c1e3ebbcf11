"""The retry budget: gRFC A6's token bucket, one per target, shared by every caller.

Each failed attempt takes a token, each success adds ``token_ratio``; retries are allowed only
while more than half the tokens remain. Under a total outage the bucket drains after a few
failures and calls stop retrying, so attempts per call stay close to 1 instead of multiplying
the load on a struggling server by ``max_attempts``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import ClassVar

__all__ = ["MAX_SHARED_TARGETS", "RetryBudget"]

#: How many targets' budgets `RetryBudget.for_target` keeps (least recently used dropped).
MAX_SHARED_TARGETS = 1024


class RetryBudget:
    """A thread-safe token bucket (never held across a call, so it is asyncio-safe too).

    ``max_tokens`` is in ``(0, 1000]`` and ``token_ratio`` in ``(0, max_tokens]``, as in A6.
    Use `for_target` to get the bucket every channel to a target shares.

    Args:
        max_tokens: The bucket's size; retries stop while it holds half or less.
        token_ratio: What each success gives back (a failure takes 1).

    Raises:
        TypeError: A value that is not a number.
        ValueError: A value that is not positive, ``max_tokens`` above 1000, or
            ``token_ratio`` above ``max_tokens``.
    """

    _shared: ClassVar[OrderedDict[tuple[str, float, float], RetryBudget]] = OrderedDict()
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    __slots__ = ("_lock", "_threshold", "_tokens", "max_tokens", "token_ratio")

    def __init__(self, max_tokens: float = 10, token_ratio: float = 0.1) -> None:
        for name, value in (("max_tokens", max_tokens), ("token_ratio", token_ratio)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, not {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, not {value!r}")
        if max_tokens > 1000:
            raise ValueError(f"max_tokens must be <= 1000 (gRFC A6), not {max_tokens!r}")
        if token_ratio > max_tokens:
            raise ValueError("token_ratio must not exceed max_tokens")
        self.max_tokens = float(max_tokens)
        self.token_ratio = float(token_ratio)
        self._threshold = self.max_tokens / 2
        self._tokens = self.max_tokens
        self._lock = threading.Lock()

    @classmethod
    def for_target(
        cls, target: str, max_tokens: float = 10, token_ratio: float = 0.1
    ) -> RetryBudget:
        """The process-wide budget for ``target`` with these settings (created on first use).

        The process keeps the budgets of the ``MAX_SHARED_TARGETS`` most recently used
        targets; an older one is dropped (channels holding it keep using it, the next channel
        to that target starts with a full bucket).
        """
        key = (target, float(max_tokens), float(token_ratio))
        with cls._shared_lock:
            budget = cls._shared.get(key)
            if budget is None:
                budget = cls._shared[key] = cls(max_tokens, token_ratio)
                if len(cls._shared) > MAX_SHARED_TARGETS:
                    del cls._shared[next(iter(cls._shared))]  # the least recently used
            else:
                cls._shared.move_to_end(key)
            return budget

    @property
    def tokens(self) -> float:
        """Tokens left now."""
        return self._tokens

    def allows_retry(self) -> bool:
        """True while retries are allowed (more than half the tokens remain)."""
        return self._tokens > self._threshold

    def on_success(self) -> None:
        """Record a successful attempt: add ``token_ratio`` tokens, up to ``max_tokens``."""
        # Unlocked read: when the bucket is full (the usual case) a success changes nothing.
        if self._tokens >= self.max_tokens:
            return
        with self._lock:
            self._tokens = min(self.max_tokens, self._tokens + self.token_ratio)

    def on_failure(self) -> bool:
        """Record a failed attempt (take a token); return whether a retry is still allowed.

        Taking the token and checking the threshold is one atomic step, so concurrent
        failures cannot all see the same, not yet drained, bucket.
        """
        with self._lock:
            self._tokens = max(0.0, self._tokens - 1)
            return self._tokens > self._threshold

    def __repr__(self) -> str:
        return (f"RetryBudget(max_tokens={self.max_tokens:g}, token_ratio={self.token_ratio:g}, "
                f"tokens={self._tokens:g})")
