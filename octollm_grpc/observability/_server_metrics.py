"""Prometheus metrics for served calls, on an injectable registry.

Names follow go-grpc-prometheus, so existing dashboards work:

- ``grpc_server_started_total{grpc_type, grpc_service, grpc_method}``
- ``grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}``
- ``grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}`` (histogram)

``grpc_type`` is ``unary``, ``client_stream``, ``server_stream`` or ``bidi_stream``;
``grpc_code`` is Go's spelling of the code (``OK``, ``NotFound``, ``Canceled``, ...), as those
dashboards expect. The standard's error metrics come on top:

- ``octollm_errors_total{error_type, component}`` (``error_type`` is the ``error_code``)
- ``octollm_error_duration_seconds{error_type}`` (histogram)
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["ServerMetrics", "go_code_name", "serve_metrics"]

_DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_METHOD_LABELS = ("grpc_type", "grpc_service", "grpc_method")


def _go_name(code: grpc.StatusCode) -> str:
    if code is grpc.StatusCode.OK:
        return "OK"
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"  # Go's spelling
    return "".join(part.capitalize() for part in code.name.split("_"))


_GO_NAMES = {code: _go_name(code) for code in grpc.StatusCode}


def go_code_name(code: grpc.StatusCode) -> str:
    """The ``grpc_code`` label value for ``code`` (Go's ``codes.Code.String()``)."""
    return _GO_NAMES[code]


class _Families:
    """The metric families of one registry (created once: a registry rejects duplicates)."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self.started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            _METHOD_LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_METHOD_LABELS, "grpc_code"),
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            _METHOD_LABELS,
            buckets=buckets,
            registry=registry,
        )
        self.errors = Counter(
            "octollm_errors_total",
            "Total errors by type",
            ("error_type", "component"),
            registry=registry,
        )
        self.error_duration = Histogram(
            "octollm_error_duration_seconds",
            "Time to detect and handle error",
            ("error_type",),
            buckets=buckets,
            registry=registry,
        )


_lock = threading.Lock()
_families: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()


def _families_for(registry: CollectorRegistry, buckets: Sequence[float]) -> _Families:
    with _lock:
        found = _families.get(registry)
        if found is None:
            found = _families[registry] = _Families(registry, buckets)
        return found


class MethodMetrics:
    """The label-bound children of one method: the per-call work is ``inc`` and ``observe``."""

    __slots__ = ("_families", "_handled", "_labels", "handling", "ok", "started")

    def __init__(self, families: _Families, labels: tuple[str, str, str]) -> None:
        self._families = families
        self._labels = labels
        self.started: Any = families.started.labels(*labels)
        self.handling: Any = families.handling.labels(*labels)
        self._handled: dict[grpc.StatusCode, Any] = {}
        self.ok: Any = self.handled(grpc.StatusCode.OK)
        """The ``grpc_server_handled_total`` child for OK, bound ahead for the hot path."""

    def handled(self, code: grpc.StatusCode) -> Any:
        """The ``grpc_server_handled_total`` child for ``code``."""
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._families.handled.labels(
                *self._labels, _GO_NAMES[code]
            )
        return child


class ServerMetrics:
    """Where served calls are counted.

    ``registry`` defaults to prometheus-client's global ``REGISTRY``. Several ``ServerMetrics``
    (e.g. a sync and an aio server) may share a registry: its families are created once, with
    the ``buckets`` of the first. ``component`` is the ``component`` label of
    ``octollm_errors_total``.

    Args:
        registry: The Prometheus registry (default: the global one).
        component: The ``component`` label of ``octollm_errors_total``.
        buckets: The handling-time histogram's buckets, in seconds.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        component: str = "grpc_server",
        buckets: Sequence[float] = _DEFAULT_BUCKETS,
    ) -> None:
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        self.component = component
        self._families = _families_for(self.registry, tuple(buckets))
        self._errors: dict[str, tuple[Any, Any]] = {}

    def for_method(self, rpc_type: str, service: str, method: str) -> MethodMetrics:
        """The bound children for one method (build once per method, keep it)."""
        return MethodMetrics(self._families, (rpc_type, service, method))

    def error(self, error_type: str, duration: float | None = None) -> None:
        """Count one error of ``error_type`` that took ``duration`` seconds to handle (not
        timed when ``None``: a refused call is only counted)."""
        children = self._errors.get(error_type)
        if children is None:
            children = self._errors[error_type] = (
                self._families.errors.labels(error_type, self.component),
                self._families.error_duration.labels(error_type),
            )
        children[0].inc()
        if duration is not None:
            children[1].observe(duration)


def serve_metrics(
    port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` over HTTP in a daemon thread; returns ``(server, thread)``.

    ``port=0`` picks a free port (``server.server_port``); ``server.shutdown()`` stops it.
    Binds loopback by default: expose it deliberately (``addr="0.0.0.0"``) if scrapers need it.

    Args:
        port: The port (``0``: a free one).
        addr: The address to bind.
        registry: The registry served (default: the global one).

    Returns:
        ``(server, thread)``.
    """
    target = registry if registry is not None else prometheus_client.REGISTRY
    server, thread = prometheus_client.start_http_server(port, addr=addr, registry=target)
    return server, thread
