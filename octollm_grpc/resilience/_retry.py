"""The standard's ``retry_with_backoff`` and a ``@retry`` decorator, on the gRPC client's backoff.

Our own loop rather than tenacity: the delays come from the same core as the gRPC client's
retries (the gRPC client's ceiling and
`full_jitter`), the retry decision reads our error mapping
and ``retry_after``, and the retry budget is the client's
[`RetryBudget`][octollm_grpc.client.RetryBudget]: tenacity would
need a custom retry, wait and stop class for each of those, and a runtime dependency.

One attempt-by-attempt decision (`_Attempts`) serves the sync and the async loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from octollm_grpc._core.backoff import Exponential, full_jitter
from octollm_grpc._core.budget import RetryBudget
from octollm_grpc._core.decorate import Decorator
from octollm_grpc._core.log import get_logger
from octollm_grpc.codes import mapping_for
from octollm_grpc.errors import OctoLLMError

__all__ = ["RetryDecorator", "retry", "retry_with_backoff"]

P = ParamSpec("P")
T = TypeVar("T")

_log = get_logger("octollm_grpc.resilience")
#: Shared default source: seeding a new Random per call costs ~100 us (it reads os.urandom).
_RANDOM = random.Random()


def _error_type(error: BaseException) -> str:
    return error.error_code if isinstance(error, OctoLLMError) else type(error).__name__


@functools.lru_cache(maxsize=256)
def _policy(max_retries: int, base_delay: float, max_delay: float,
            exponential_base: float) -> Exponential:
    # Cached: validating a policy on every call would cost more than the call's bookkeeping.
    return Exponential(initial_backoff=base_delay, max_backoff=max(max_delay, base_delay),
                       backoff_multiplier=exponential_base)


class _Attempts:
    """What to do after each failed attempt: the delay before the next, or re-raise."""

    def __init__(
        self,
        name: str,
        max_retries: int,
        base_delay: float,
        max_delay: float,
        exponential_base: float,
        jitter: bool,
        retry_on: tuple[type[BaseException], ...],
        deadline: float | None,
        budget: RetryBudget | None,
        rng: random.Random | None,
        clock: Callable[[], float],
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, not {max_retries!r}")
        if base_delay < 0:
            raise ValueError(f"base_delay must not be negative, not {base_delay!r}")
        if not 0 <= max_delay <= threading.TIMEOUT_MAX:  # also refuses NaN
            raise ValueError(
                f"max_delay must be in [0, {threading.TIMEOUT_MAX:g}] s, not {max_delay!r}")
        if deadline is not None and deadline <= 0:
            raise ValueError(f"deadline must be positive, not {deadline!r}")
        self._name = name
        self._max_retries = max_retries
        # base_delay=0 means "retry at once": Exponential wants positive times.
        self._policy = (_policy(max_retries, base_delay, max_delay, exponential_base)
                        if base_delay > 0 else None)
        self._max_delay = max_delay
        self._jitter = jitter
        self._retry_on = retry_on
        self._budget = budget
        self._rng = rng if rng is not None else _RANDOM
        self._clock = clock
        self._deadline = None if deadline is None else clock() + deadline
        self.attempt = 0
        """Attempts made so far, counting the first."""

    def succeeded(self, result: T) -> T:
        """Record a success (the budget earns); ``result`` passed through."""
        if self._budget is not None:
            self._budget.on_success()
        return result

    def delay_after(self, error: Exception) -> float | None:
        """Seconds to wait before retrying after ``error``; ``None``: re-raise it now."""
        self.attempt += 1
        if not isinstance(error, self._retry_on):
            return None
        if isinstance(error, OctoLLMError) and not mapping_for(error).retryable:
            return None  # a ValidationError stays one however often it is sent
        budget_ok = self._budget.on_failure() if self._budget is not None else True
        reason = None
        delay = 0.0
        if self.attempt > self._max_retries:
            reason = "attempts"
        elif not budget_ok:
            reason = "budget"
        else:
            advice = _advice(error)
            delay = self._backoff() if advice is None else advice
            if advice is not None and advice > self._max_delay:
                # The error's own retry_after asks for longer than the caller allows: as the
                # channel with max_pushback, give up now (the caller has the advice).
                reason = "retry_after"
            elif self._deadline is not None and self._clock() + delay >= self._deadline:
                reason = "deadline"
        if reason is not None:
            _log.error("resilience.retry.gave_up", function=self._name, attempt=self.attempt,
                       reason=reason, error=str(error), error_type=_error_type(error),
                       **({"retry_after": delay} if reason == "retry_after" else {}))
            return None
        _log.warning("resilience.retry.retrying", function=self._name, attempt=self.attempt,
                     delay=delay, error=str(error), error_type=_error_type(error))
        return delay

    def _backoff(self) -> float:
        if self._policy is None:
            return 0.0
        # The policy's ceiling is at least base_delay; the standard's formula caps at max_delay.
        if self._jitter:
            return min(full_jitter(self._policy, self.attempt, self._rng), self._max_delay)
        return min(self._policy.backoff_ceiling(self.attempt), self._max_delay)


def _advice(error: BaseException) -> float | None:
    """The error's own ``retry_after`` (the server or breaker said when: no jitter), if any."""
    retry_after = getattr(error, "retry_after", None)
    if (isinstance(retry_after, (int, float)) and not isinstance(retry_after, bool)
            and retry_after >= 0):
        return float(retry_after)
    return None


def _name_of(func: Callable[..., Any]) -> str:
    return str(getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
               or type(func).__name__)


async def retry_with_backoff(
    func: Callable[[], Awaitable[T] | T],
    max_retries: int = 3,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    exponential_base: float = 2.0,
    jitter: bool = True,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    *,
    deadline: float | None = None,
    budget: RetryBudget | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``func()`` (awaiting its result if it is awaitable) until it succeeds.

    The standard's contract, with these differences a caller can rely on:

    - ``max_retries`` retries at most (``max_retries + 1`` attempts); the delay before retry
      ``n`` is drawn uniformly from ``[0, min(base_delay * exponential_base ** (n - 1),
      max_delay)]`` (full jitter, as the gRPC client), or is that ceiling with ``jitter=False``;
    - only ``retry_on`` errors are retried, and never an `OctoLLMError` whose mapping is
      not retryable (``ValidationError``, ``DatabaseError``, ...);
    - an error's ``retry_after`` (``RateLimitError``, ``CircuitOpenError``) is the next delay;
      one over ``max_delay`` is not waited: the error is re-raised at once (as the gRPC
      channel does with a pushback over ``max_pushback``), logged with ``reason``
      ``retry_after``. No wait ever exceeds ``max_delay``, which must be within
      ``[0, threading.TIMEOUT_MAX]`` (``ValueError`` otherwise);
    - ``deadline`` (seconds from the first call, on ``clock``): no retry whose delay would end
      past it (a running attempt is not cut short: give ``func`` its own timeout);
      ``budget``: each retryable failure takes a token, no retry once it is drained;
    - each retry logs ``"resilience.retry.retrying"`` (warning); giving up on a retryable error
      logs ``"resilience.retry.gave_up"`` (error) with ``reason`` ``attempts``, ``deadline`` or
      ``budget`` (or ``retry_after``). The last error is re-raised unchanged.

    Args:
        func: What is called, without arguments (use ``functools.partial``).
        max_retries: Retries after the first attempt (``max_retries + 1`` attempts).
        base_delay: The first retry's delay ceiling, in seconds.
        max_delay: The longest wait: the backoff's cap, and the longest ``retry_after``
            waited (a longer one is re-raised at once).
        exponential_base: The ceiling's growth per retry.
        jitter: Full jitter (``False``: the ceiling itself).
        retry_on: The exceptions retried.
        deadline: Seconds from the first call after which no retry starts.
        budget: A retry budget each retry takes a token from.
        sleep: The async sleep.
        rng: The random source of the jitter.
        clock: Monotonic seconds.

    Returns:
        What ``func()`` returned (awaited).

    Raises:
        Exception: The last error, unchanged, once retries stop.
        ValueError: A setting out of range.
    """
    attempts = _Attempts(_name_of(func), max_retries, base_delay, max_delay, exponential_base,
                         jitter, retry_on, deadline, budget, rng, clock)
    while True:
        try:
            result = func()
            return attempts.succeeded(await result if inspect.isawaitable(result) else result)
        except Exception as error:
            delay = attempts.delay_after(error)
            if delay is None:
                raise
        await sleep(delay)


def _retry_blocking(
    func: Callable[[], T],
    max_retries: int = 3,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    exponential_base: float = 2.0,
    jitter: bool = True,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    *,
    deadline: float | None = None,
    budget: RetryBudget | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """The blocking form of [`retry_with_backoff`][octollm_grpc.resilience.retry_with_backoff] (same
    arguments, same contract)."""
    attempts = _Attempts(_name_of(func), max_retries, base_delay, max_delay, exponential_base,
                         jitter, retry_on, deadline, budget, rng, clock)
    while True:
        try:
            return attempts.succeeded(func())
        except Exception as error:
            delay = attempts.delay_after(error)
            if delay is None:
                raise
        sleep(delay)


def retry(
    *,
    max_retries: int = 3,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    exponential_base: float = 2.0,
    jitter: bool = True,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    deadline: float | None = None,
    budget: RetryBudget | None = None,
    sleep: Callable[[float], Any] | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RetryDecorator:
    """``@retry(...)``: [`retry_with_backoff`][octollm_grpc.resilience.retry_with_backoff] around
    every call of a sync or async function.

    Takes [`retry_with_backoff`][octollm_grpc.resilience.retry_with_backoff]'s keyword arguments.
    ``sleep`` must match the function:
    an ``async`` sleep for an ``async def``, a blocking one for a ``def`` (defaults:
    ``asyncio.sleep`` and ``time.sleep``). Bad settings raise here, not on the first failure.

    Args:
        max_retries: Retries after the first attempt (``max_retries + 1`` attempts).
        base_delay: The first retry's delay ceiling, in seconds.
        max_delay: The largest delay ceiling.
        exponential_base: The ceiling's growth per retry.
        jitter: Full jitter (``False``: the ceiling itself).
        retry_on: The exceptions retried.
        deadline: Seconds from the first call after which no retry starts.
        budget: A retry budget each retry takes a token from.
        sleep: The sleep (async for ``async def``).
        rng: The random source of the jitter.
        clock: Monotonic seconds.

    Returns:
        The decorator.

    Raises:
        ValueError: A setting out of range (raised here, not on the first failure).
        TypeError: A setting of the wrong type.
    """
    # Fail at decoration time, not on the first failure, for bad settings.
    _Attempts("", max_retries, base_delay, max_delay, exponential_base, jitter, retry_on,
              deadline, None, rng, clock)
    options: dict[str, Any] = {
        "max_retries": max_retries, "base_delay": base_delay, "max_delay": max_delay,
        "exponential_base": exponential_base, "jitter": jitter, "retry_on": retry_on,
        "deadline": deadline, "budget": budget, "rng": rng, "clock": clock,
    }
    if sleep is not None:
        options["sleep"] = sleep
    return RetryDecorator(options)


class RetryDecorator(Decorator):
    """What [`retry`][octollm_grpc.resilience.retry] returns: apply it to a ``def`` or an ``async
    def``.

    ``options`` are [`retry_with_backoff`][octollm_grpc.resilience.retry_with_backoff]'s keyword
    arguments (build it with [`retry`][octollm_grpc.resilience.retry],
    which checks them).
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options

    async def _run_async(self, func: Callable[..., Awaitable[T]], *args: Any,
                         **kwargs: Any) -> T:
        return await retry_with_backoff(_named_call(func, args, kwargs), **self._options)

    def _run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return _retry_blocking(_named_call(func, args, kwargs), **self._options)


def _named_call(func: Callable[..., T], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Callable[[], T]:
    # Named as ``func``: the log events say which function was retried.
    call = functools.partial(func, *args, **kwargs)
    functools.update_wrapper(call, func)
    return call
