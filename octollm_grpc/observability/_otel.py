"""OpenTelemetry hooks (the ``[otel]`` extra: ``opentelemetry-api`` only at run time).

Everything here acts on the span that is current when it runs, whoever started it
(opentelemetry-instrumentation-grpc's interceptors, or the application). Without
``opentelemetry-api`` installed every hook is a no-op, so the library works without it.

- `retry_event`: a retry becomes a span event ``rpc.retry`` with the attempt number,
  the failed attempt's code and the backoff delay.
- `call_failed`: a call our server stack fails sets the span's status and attributes.
- `start_server_span`: our server stack's own ``SERVER`` span, child of the caller's
  ``traceparent``, when no span is current (no instrumentation) and a tracer provider is set.
- `inject`: outbound calls on a resilient channel carry the current trace context.
- `add_trace_ids`: a structlog processor adding ``trace_id`` / ``span_id``
  ([`octollm_grpc.observability._logs.configure_logging`][octollm_grpc.server.configure_logging]
  installs it).
"""

from __future__ import annotations

from typing import Any

import grpc

try:  # the [otel] extra
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
    from opentelemetry.propagators.textmap import Getter as _Getter
except ImportError:  # pragma: no cover - exercised by the test that hides opentelemetry
    _trace = None  # type: ignore[assignment]
    _Getter = object  # type: ignore[assignment,misc]

__all__ = [
    "AVAILABLE",
    "ServerSpan",
    "active_tracer",
    "add_trace_ids",
    "call_failed",
    "end_server_span",
    "inject",
    "retry_event",
    "set_principal",
    "start_server_span",
    ]

#: Whether ``opentelemetry-api`` is importable.
AVAILABLE = _trace is not None
#: What get_current_span() gives when no span is current.
_INVALID: Any = _trace.INVALID_SPAN if _trace is not None else None


def _recording_span() -> Any:
    if _trace is None:
        return None
    span = _trace.get_current_span()
    # INVALID_SPAN is what no current span reads as: nothing to ask it.
    return span if span is not _INVALID and span.is_recording() else None


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


def set_principal(principal: str) -> None:
    """Name the authenticated caller on the current span: ``octollm.principal`` (a
    certificate's identity or a token's subject; never a credential)."""
    span = _recording_span()
    if span is not None:
        span.set_attribute("octollm.principal", principal)


def add_trace_ids(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: ``trace_id`` and ``span_id`` (hex) of the current span, if any."""
    if _trace is not None:
        span = _trace.get_current_span()
        if span is _INVALID:
            return event_dict
        context = span.get_span_context()
        if context.is_valid:
            event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
            event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


_global: tuple[Any, Any] = (None, None)  # (the global provider, our tracer from it)
#: A proxy provider: its get_tracer() gives a ProxyTracer exactly while no global provider is
#: set (public API: the proxy delegates to the real provider once one is set).
_PROXY: Any = _trace.ProxyTracerProvider() if _trace is not None else None
#: Whether get_tracer_provider() was asked once (it loads the provider that the
#: OTEL_PYTHON_TRACER_PROVIDER environment variable names, if any, on first use).
_looked_up = False


def active_tracer(provider: Any = None) -> Any:
    """Our tracer from ``provider``, or from the global provider once an application has set
    one; ``None`` when there is none (or no opentelemetry): then no span is started at all.

    Asked on every call, so a provider set after the server was built is used from the next
    call on. While none is set, the answer comes from the proxy provider (a fraction of the
    cost of ``get_tracer_provider()``, which reads ``os.environ`` each time it finds none);
    the environment variable is read at the first lookup, as opentelemetry reads it once.
    """
    global _global, _looked_up
    if _trace is None:
        return None
    if provider is not None:
        return provider.get_tracer("octollm_grpc")
    if _looked_up and _global[1] is None and \
            isinstance(_PROXY.get_tracer("octollm_grpc"), _trace.ProxyTracer):
        return None  # nobody set a provider: skip the per-call span work
    _looked_up = True
    current = _trace.get_tracer_provider()
    if isinstance(current, (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider)):
        return None  # nobody set a provider: skip the per-call span work
    cached_provider, tracer = _global
    if cached_provider is not current:
        tracer = current.get_tracer("octollm_grpc")
        _global = (current, tracer)
    return tracer


class _MetadataGetter(_Getter):  # type: ignore[type-arg]
    """Reads W3C trace context from gRPC invocation metadata (a sequence of pairs)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        values = [v for k, v in carrier if k == key and isinstance(v, str)]
        return values or None

    def keys(self, carrier: Any) -> list[str]:
        return [k for k, _v in carrier]


_GETTER = _MetadataGetter()

#: A started server span and the context token that made it current.
ServerSpan = tuple[Any, Any]


def start_server_span(tracer: Any, method: str, metadata: Any) -> ServerSpan | None:
    """Start a ``SERVER`` span for ``method`` and make it current, unless a span is current
    already (opentelemetry-instrumentation-grpc's) or ``tracer`` records nothing.

    Its parent is the caller's trace context from ``metadata`` (``traceparent``).
    """
    if tracer is None or _trace is None or _trace.get_current_span().get_span_context().is_valid:
        return None
    parent = _propagate.extract(metadata or (), getter=_GETTER)
    service, _, name = method.lstrip("/").partition("/")
    span = tracer.start_span(method.lstrip("/"), context=parent, kind=_trace.SpanKind.SERVER,
                             attributes={"rpc.system": "grpc", "rpc.service": service,
                                         "rpc.method": name})
    if not span.is_recording():
        return None
    return span, _context.attach(_trace.set_span_in_context(span, parent))


def end_server_span(started: ServerSpan) -> None:
    """End a span `start_server_span` started, and make its parent current again."""
    span, token = started
    _context.detach(token)  # logs, never raises, if the call ended in another context
    span.end()


def inject(metadata: Any) -> Any:
    """``metadata`` plus the current trace context (``traceparent``...), unless it has it."""
    if _trace is None or not _trace.get_current_span().get_span_context().is_valid:
        return metadata
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    if not carrier:
        return metadata
    present = {key for key, _value in metadata} if metadata else set()
    added = tuple((k, v) for k, v in carrier.items() if k not in present)
    if not added:
        return metadata
    return (*metadata, *added) if metadata else added
