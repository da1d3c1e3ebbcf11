"""Fallback chains and graceful degradation: the standard's primary -> read replica, for any call.

``with_fallback(primary, replica, on=(DatabaseError,))`` returns one callable that tries each
in order with the same arguments. A callable guarded by an open breaker (``@breaker``) is
skipped without being called, and a `CircuitOpenError` from any of
them always moves on to the next: a breaker that is open is the plainest "unavailable" there is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Final

from octollm_grpc._core.breaker import CircuitState
from octollm_grpc._core.log import get_logger
from octollm_grpc.errors import CircuitOpenError, OctoLLMError
from octollm_grpc.resilience._breaker import breaker_of

__all__ = ["with_fallback"]

_log = get_logger("octollm_grpc.resilience")


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"


_MISSING: Final = _Missing()


def _name(func: Callable[..., Any]) -> str:
    return str(getattr(func, "__qualname__", None) or type(func).__name__)


def _error_type(error: BaseException) -> str:
    return error.error_code if isinstance(error, OctoLLMError) else type(error).__name__


class _Chain:
    """The decision part, shared by the sync and the async form."""

    def __init__(self, callables: tuple[Callable[..., Any], ...],
                 on: tuple[type[BaseException], ...], default: object,
                 degrade: Callable[[BaseException], Any] | None) -> None:
        if not callables:
            raise ValueError("with_fallback() needs at least one callable")
        if default is not _MISSING and degrade is not None:
            raise ValueError("pass default or degrade, not both")
        self.callables = callables
        self.on: tuple[type[BaseException], ...] = (*on, CircuitOpenError)
        self.default = default
        self.degrade = degrade

    def skip(self, index: int) -> CircuitOpenError | None:
        """A ``CircuitOpenError`` when callable ``index`` is behind an open breaker."""
        breaker = breaker_of(self.callables[index])
        if breaker is None or breaker.state is not CircuitState.OPEN:
            return None
        try:
            token = breaker.core.acquire()  # raises with retry_after, as the state says it will
        except CircuitOpenError as error:
            return error
        # It half-opened between the two looks: give the permit back; the call takes its own.
        breaker.core.release(token)
        return None

    def failed(self, index: int, error: BaseException) -> None:
        """Log the fallback from ``index``, or re-raise ``error`` when nothing is left."""
        if not isinstance(error, self.on):
            raise error
        name = _name(self.callables[index])
        if index + 1 < len(self.callables):
            _log.warning("resilience.fallback.trying_next", function=name,
                         fallback=_name(self.callables[index + 1]), error=str(error),
                         error_type=_error_type(error))
            return
        degraded = self.default is not _MISSING or self.degrade is not None
        # A degraded answer is a handled outcome (warning); an error for the caller is not.
        (_log.warning if degraded else _log.error)(
            "resilience.fallback.exhausted", function=name, attempts=len(self.callables),
            error=str(error), error_type=_error_type(error), degraded=degraded)
        if self.degrade is not None:
            return
        if self.default is _MISSING:
            raise error

    def result_when_all_failed(self, error: BaseException) -> Any:
        return self.degrade(error) if self.degrade is not None else self.default


def with_fallback(
    *callables: Callable[..., Any],
    on: tuple[type[BaseException], ...] = (Exception,),
    default: object = _MISSING,
    degrade: Callable[[BaseException], Any] | None = None,
) -> Callable[..., Any]:
    """One callable that tries ``callables`` in order with the arguments it is given.

    The result is an ``async def`` if any of ``callables`` is one, else a plain function.
    A failure with an ``on`` error (or ``CircuitOpenError``) moves to the next callable and
    logs ``"resilience.fallback.trying_next"`` at warning; other errors propagate at once. When
    all fail: ``"resilience.fallback.exhausted"`` at error, then the last error is raised, unless a
    ``default`` value or ``degrade(error)`` function is given, whose result is returned
    (graceful degradation for non-critical reads; the log line is then a warning).
    Kinds are read from the callables themselves: a ``lambda`` returning a coroutine is not an
    ``async def``, so pass the coroutine function itself.

    Args:
        *callables: Tried in order with the same arguments.
        on: The exceptions that move to the next callable.
        default: Returned when all fail (else the last error is raised).
        degrade: Called with the last error when all fail; its result is returned.

    Returns:
        The combined callable (``async def`` if any of ``callables`` is).

    Raises:
        Exception: The last error when every callable failed and neither ``default`` nor
            ``degrade`` is given.
    """
    chain = _Chain(callables, on, default, degrade)

    if any(inspect.iscoroutinefunction(func) for func in callables):
        async def first_available_async(*args: Any, **kwargs: Any) -> Any:
            error: BaseException | None = None
            for index, func in enumerate(callables):
                error = chain.skip(index)
                if error is None:
                    try:
                        result = func(*args, **kwargs)
                        if inspect.isawaitable(result):
                            result = await result
                        return result
                    except chain.on as failure:
                        error = failure
                chain.failed(index, error)
            assert error is not None
            return chain.result_when_all_failed(error)

        return first_available_async

    def first_available(*args: Any, **kwargs: Any) -> Any:
        error: BaseException | None = None
        for index, func in enumerate(callables):
            error = chain.skip(index)
            if error is None:
                try:
                    return func(*args, **kwargs)
                except chain.on as failure:
                    error = failure
            chain.failed(index, error)
        assert error is not None
        return chain.result_when_all_failed(error)

    return first_available
