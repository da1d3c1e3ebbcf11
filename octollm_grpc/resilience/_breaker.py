"""The standard's ``CircuitBreaker`` for any callable, on the gRPC client's breaker core.

``CircuitBreaker(failure_threshold=5, timeout=60, expected_exception=Exception)`` keeps the
standard's constructor and ``await breaker.call(func, *args, **kwargs)``, and also decorates sync
and async functions (``@breaker``). The state machine, the half-open permits and the metrics
are the gRPC client's ([`octollm_grpc.client.ChannelBreaker`][octollm_grpc.client.ChannelBreaker]),
so a breaker around an
HTTP call behaves, logs and is graphed exactly like one around a gRPC channel:

- only ``expected_exception`` failures count; any other exception passes through and gives no
  verdict (a half-open probe that raises one frees its permit, it neither closes nor reopens);
- open: `CircuitOpenError` at once, with ``retry_after`` (seconds
  until a probe is let through), and the function is not called;
- half-open: exactly ``half_open_probes`` calls run at a time, the rest fail fast;
- the clock is monotonic and injectable; no lock is held while the function runs.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry

from octollm_grpc._core import breaker as core
from octollm_grpc._core.decorate import Decorator
from octollm_grpc.errors import CircuitOpenError

__all__ = ["CircuitBreaker", "CircuitState", "breaker_of"]

CircuitState = core.CircuitState

P = ParamSpec("P")
T = TypeVar("T")

_unnamed = itertools.count(1)
_BREAKER_ATTR = "__octollm_circuit_breaker__"


def breaker_of(func: Callable[..., Any]) -> CircuitBreaker | None:
    """The breaker that guards ``func`` when it was decorated with ``@breaker``, else ``None``."""
    found = getattr(func, _BREAKER_ATTR, None)
    return found if isinstance(found, CircuitBreaker) else None


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    # An object whose class has an ``async def __call__`` is awaited like a coroutine function.
    dunder_call = vars(type(func)).get("__call__")
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(dunder_call)


class _Ready:
    """The awaitable result of a plain function that already ran."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self._value
        yield  # a generator: awaiting it finishes at once


class CircuitBreaker(Decorator):
    """A circuit breaker around any call (see the module docstring for the guarantees).

    ``name`` labels the metrics (``octollm_client_circuit_state{target=name}``) and the
    ``CircuitOpenError``; unnamed breakers get ``breaker-<n>``. ``timeout`` is the seconds the
    breaker stays open before probing. ``clock`` must be monotonic (seconds); ``registry`` is
    the Prometheus registry (default: the global one).

    Args:
        failure_threshold: Consecutive failures that open it.
        timeout: Seconds open before a probe is let through.
        expected_exception: The exceptions that count as failures.
        name: Labels the metrics and the ``CircuitOpenError``.
        half_open_probes: Calls admitted at a time while half-open.
        clock: Monotonic seconds.
        registry: The Prometheus registry (default: the global one).
        listeners: Called as ``listener(breaker, old_state, new_state)`` on each change; or
            objects with ``state_change(breaker, old, new)``, ``success(breaker)`` and / or
            ``failure(breaker)`` methods, which also hear every call's verdict.

    Raises:
        ValueError: A threshold, timeout or probe count out of range.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        timeout: float = 60,
        expected_exception: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        *,
        name: str | None = None,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
        listeners: Iterable[core.BreakerListener] = (),
    ) -> None:
        # Checked here too so a mistake is reported in the standard's names, not the core's.
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int) \
                or failure_threshold < 1:
            raise ValueError(f"failure_threshold must be an int >= 1, not {failure_threshold!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, not {timeout!r}")
        self.failure_threshold = failure_threshold
        self.timeout = timeout
        self.expected_exception = expected_exception
        self.name = name if name is not None else f"breaker-{next(_unnamed)}"
        settings = core.BreakerLimits(
            failure_threshold=failure_threshold,
            reset_timeout=timeout,
            max_reset_timeout=max(timeout, 300.0),  # fixed open time: the multiplier stays 1
            half_open_probes=half_open_probes,
        )
        self.core = core.BreakerCore(self.name, settings, open_error=CircuitOpenError,
                                     clock=clock, registry=registry, listeners=listeners)
        """The shared state machine (``acquire`` / ``on_success`` / ``on_failure``)."""

    @property
    def state(self) -> core.CircuitState:
        """The state now: ``CircuitState.CLOSED``, ``OPEN`` or ``HALF_OPEN``."""
        return self.core.state

    def reset(self) -> None:
        """Close the breaker now and forget its failures.

        Logs ``circuit_breaker_reset`` and counts
        ``octollm_client_circuit_operations_total{operation="reset"}``.
        """
        self.core.reset()

    def force_open(self, open_for: float | None = None) -> None:
        """Open the breaker now: calls fail fast with ``CircuitOpenError`` meanwhile.

        Logs ``circuit_breaker_forced_open`` and counts
        ``octollm_client_circuit_operations_total{operation="force_open"}``.

        Args:
            open_for: Seconds open before a probe is let through (default: ``timeout``);
                ``math.inf`` keeps it open until ``reset()``.

        Raises:
            ValueError: ``open_for`` is not a number > 0.
        """
        self.core.force_open(open_for)

    def _settle(self, token: int, error: BaseException | None) -> None:
        if error is None:
            self.core.on_success(token)
        elif isinstance(error, self.expected_exception):
            self.core.on_failure(token)
        else:
            self.core.release(token)  # not ours to judge: no verdict, the permit is freed

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """``await breaker.call(func, *args, **kwargs)``: ``func`` guarded by the breaker.

        A coroutine function (or a callable that returns an awaitable) runs when the result is
        awaited, as in the OctoLLM error-handling standard. A plain function runs at once,
        inside this call, so ``breaker.call(fn)`` without ``await`` still calls it and records
        its verdict; awaiting the result then gives its return value. For blocking code,
        `call_sync` returns the value itself.

        Args:
            func: The function to call.
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            An awaitable of ``func``'s result.

        Raises:
            CircuitOpenError: The breaker is open (or half-open with every probe permit
                taken); ``func`` is not called. For a plain ``func`` it is raised at once.
        """
        if _is_async(func):
            return self._call_async(func, *args, **kwargs)
        token = self.core.acquire()
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            self._settle(token, error)
            raise
        if inspect.isawaitable(result):
            # A plain function that returned an awaitable (a lambda around a coroutine): its
            # verdict is the awaitable's outcome.
            return self._settle_awaited(token, result)
        self._settle(token, None)
        return _Ready(result)

    async def _call_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        token = self.core.acquire()
        try:
            result = func(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as error:
            self._settle(token, error)
            raise
        self._settle(token, None)
        return result

    async def _settle_awaited(self, token: int, pending: Awaitable[Any]) -> Any:
        try:
            result = await pending
        except BaseException as error:
            self._settle(token, error)
            raise
        self._settle(token, None)
        return result

    def call_sync(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``func(*args, **kwargs)`` guarded by the breaker, for blocking code."""
        token = self.core.acquire()
        try:
            result = func(*args, **kwargs)
        except BaseException as error:
            self._settle(token, error)
            raise
        self._settle(token, None)
        return result

    # ``@breaker`` (Decorator): every call of a decorated function goes through here.
    _run_async = _call_async
    _run = call_sync

    def _decorated(self, wrapper: Callable[P, Any]) -> Callable[P, Any]:
        setattr(wrapper, _BREAKER_ATTR, self)
        return wrapper

    def __repr__(self) -> str:
        return (f"CircuitBreaker(name={self.name!r}, failure_threshold={self.failure_threshold}, "
                f"timeout={self.timeout!r}, state={self.state.value!r})")
