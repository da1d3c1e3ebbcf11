"""OpenTelemetry hooks (the ``[otel]`` extra: ``opentelemetry-api`` only at run time).

Everything here acts on the span that is current when it runs, whoever started it
(opentelemetry-instrumentation-grpc's interceptors, or the application). Without
``opentelemetry-api`` installed every hook is a no-op, so the library works without it.

- :func:`retry_event`: a retry becomes a span event ``rpc.retry`` with the attempt number,
  the failed attempt's code and the backoff delay.
"""

from __future__ import annotations

from typing import Any

import grpc

try:  # the [otel] extra
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised by the test that hides opentelemetry
    _trace = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "retry_event"]

#: Whether ``opentelemetry-api`` is importable.
AVAILABLE = _trace is not None


def _recording_span() -> Any:
    if _trace is None:
        return None
    span = _trace.get_current_span()
    return span if span.is_recording() else None


def retry_event(attempt: int, code: grpc.StatusCode, delay: float) -> None:
    """Add an ``rpc.retry`` event to the current span: attempt ``attempt`` follows a failed
    one that ended with ``code``, after ``delay`` seconds."""
    span = _recording_span()
    if span is not None:
        span.add_event("rpc.retry", {
            "octollm.attempt": attempt,
            "rpc.grpc.status_code": code.value[0],
            "octollm.retry.code": code.name,
            "octollm.retry.delay_s": delay,
        })
