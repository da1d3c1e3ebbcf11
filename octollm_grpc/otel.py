"""OpenTelemetry hooks (the ``[otel]`` extra: ``opentelemetry-api`` only at run time).

Everything here acts on the span that is current when it runs, whoever started it
(opentelemetry-instrumentation-grpc's interceptors, or the application). Without
``opentelemetry-api`` installed every hook is a no-op, so the library works without it.

- :func:`retry_event`: a retry becomes a span event ``rpc.retry`` with the attempt number,
  the failed attempt's code and the backoff delay.
- :func:`call_failed`: a call our server stack fails sets the span's status and attributes.
- :func:`add_trace_ids`: a structlog processor adding ``trace_id`` / ``span_id``
  (:func:`octollm_grpc.server.logs.configure_logging` installs it).
"""

from __future__ import annotations

from typing import Any

import grpc

try:  # the [otel] extra
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised by the test that hides opentelemetry
    _trace = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "add_trace_ids", "call_failed", "retry_event"]

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


def call_failed(code: grpc.StatusCode, error_code: str | None, message: str,
                request_id: str | None) -> None:
    """Mark the current span as a failed call: status ERROR with ``message`` (the safe one
    that went on the wire, never an unexpected exception's text), ``rpc.grpc.status_code``
    (int), ``error.type`` (the error code, e.g. ``TASK_NOT_FOUND``) and
    ``octollm.request_id``."""
    span = _recording_span()
    if span is None:
        return
    assert _trace is not None
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    span.set_attribute("error.type", error_code or code.name)
    if request_id is not None:
        span.set_attribute("octollm.request_id", request_id)
    span.set_status(_trace.Status(_trace.StatusCode.ERROR, message))


def add_trace_ids(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: ``trace_id`` and ``span_id`` (hex) of the current span, if any."""
    if _trace is not None:
        context = _trace.get_current_span().get_span_context()
        if context.is_valid:
            event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
            event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict
