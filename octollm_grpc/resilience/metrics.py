"""``track_errors``: the seed's error metrics for any function, on the server's metric objects.

``octollm_errors_total{error_type, component}`` and ``octollm_error_duration_seconds{error_type}``
are the families :class:`~octollm_grpc.server.metrics.ServerMetrics` registers, so errors of a
background job and of the gRPC server land in the same series, told apart by ``component``.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

from prometheus_client import CollectorRegistry

from octollm_grpc.codes import mapping_for
from octollm_grpc.errors import OctoLLMError
from octollm_grpc.server.metrics import ServerMetrics

__all__ = ["ErrorTracker", "track_errors"]

P = ParamSpec("P")
T = TypeVar("T")


def error_type(error: BaseException) -> str:
    """The ``error_type`` label: the error's ``error_code``, or its mapping's for other errors."""
    if isinstance(error, OctoLLMError):
        return error.error_code
    return mapping_for(error).error_code  # TIMEOUT_ERROR, else INTERNAL_ERROR, as the server


class ErrorTracker:
    """What :func:`track_errors` returns: apply it to a ``def`` or an ``async def``."""

    def __init__(self, component: str, registry: CollectorRegistry | None,
                 clock: Callable[[], float]) -> None:
        self.metrics = ServerMetrics(registry, component=component)
        self._clock = clock

    def _count(self, error: BaseException, start: float) -> None:
        self.metrics.error(error_type(error), self._clock() - start)

    @overload
    def __call__(self, func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __call__(self, func: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, func: Callable[P, Any]) -> Callable[P, Any]:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def tracked_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                start = self._clock()
                try:
                    return await func(*args, **kwargs)
                except Exception as error:
                    self._count(error, start)
                    raise

            return tracked_async

        @functools.wraps(func)
        def tracked(*args: P.args, **kwargs: P.kwargs) -> Any:
            start = self._clock()
            try:
                return func(*args, **kwargs)
            except Exception as error:
                self._count(error, start)
                raise

        return tracked


def track_errors(
    component: str,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> ErrorTracker:
    """Count every exception the decorated function raises, then re-raise it unchanged.

    Each one adds 1 to ``octollm_errors_total{error_type, component}`` and its time since the
    call started to ``octollm_error_duration_seconds{error_type}``; ``error_type`` is the
    ``error_code`` (``INTERNAL_ERROR`` for exceptions outside the hierarchy, as the server
    counts them). Cancellation (``BaseException``) is not an error and is not counted.
    ``registry`` defaults to prometheus-client's global one.
    """
    return ErrorTracker(component, registry, clock)
