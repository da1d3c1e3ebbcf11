"""One way to decorate a ``def`` or an ``async def``: what ``@breaker``, ``@retry(...)`` and
``@track_errors(...)`` share. Each says only how it runs one call, blocking or awaited."""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

__all__ = ["Decorator"]

P = ParamSpec("P")
T = TypeVar("T")


class Decorator(abc.ABC):
    """Apply it to a ``def`` or an ``async def``: every call of the result goes through
    `_run_async` (awaited, for an ``async def``) or `_run`."""

    @abc.abstractmethod
    async def _run_async(self, func: Callable[..., Awaitable[T]], *args: Any,
                        **kwargs: Any) -> T:
        """``await func(*args, **kwargs)``, guarded."""

    @abc.abstractmethod
    def _run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)``, guarded, for blocking code."""

    @overload
    def __call__(self, func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __call__(self, func: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, func: Callable[P, Any]) -> Callable[P, Any]:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def wrapped_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self._run_async(func, *args, **kwargs)

            return self._decorated(wrapped_async)

        @functools.wraps(func)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self._run(func, *args, **kwargs)

        return self._decorated(wrapped)

    def _decorated(self, wrapper: Callable[P, Any]) -> Callable[P, Any]:
        """Called with each wrapper made; returns what the decoration returns (the wrapper)."""
        return wrapper
