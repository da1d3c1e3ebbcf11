"""``track_errors``: the standard's error metrics for any function, on the server's metric objects.

``octollm_errors_total{error_type, component}`` and ``octollm_error_duration_seconds{error_type}``
are the families
[`ServerMetrics`][octollm_grpc.server.ServerMetrics] registers, so errors of a
background job and of the gRPC server land in the same series, told apart by ``component``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry

from octollm_grpc._core.decorate import Decorator
from octollm_grpc.codes import mapping_for
from octollm_grpc.errors import OctoLLMError
from octollm_grpc.observability._server_metrics import ServerMetrics

__all__ = ["ErrorTracker", "track_errors"]

P = ParamSpec("P")
T = TypeVar("T")


def error_type(error: BaseException) -> str:
    """The ``error_type`` label: the error's ``error_code``, or its mapping's for other errors."""
    if isinstance(error, OctoLLMError):
        return error.error_code
    return mapping_for(error).error_code  # TIMEOUT_ERROR, else INTERNAL_ERROR, as the server


class ErrorTracker(Decorator):
    """What [`track_errors`][octollm_grpc.resilience.track_errors] returns: apply it to a ``def`` or
    an ``async def``
    (`Decorator`); each call is counted here."""

    def __init__(self, component: str, registry: CollectorRegistry | None,
                 clock: Callable[[], float]) -> None:
        self.metrics = ServerMetrics(registry, component=component)
        self._clock = clock

    async def _run_async(self, func: Callable[..., Awaitable[T]], *args: Any,
                         **kwargs: Any) -> T:
        start = self._clock()
        try:
            return await func(*args, **kwargs)
        except Exception as error:
            self.metrics.error(error_type(error), self._clock() - start)
            raise

    def _run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        start = self._clock()
        try:
            return func(*args, **kwargs)
        except Exception as error:
            self.metrics.error(error_type(error), self._clock() - start)
            raise


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

    Args:
        component: The ``component`` label.
        registry: The Prometheus registry (default: the global one).
        clock: Seconds, for the duration.

    Returns:
        A decorator for a ``def`` or an ``async def``.
    """
    return ErrorTracker(component, registry, clock)
