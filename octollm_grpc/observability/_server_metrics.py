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

import bisect
import math
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

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


class _Cells:
    """The counts of one method, kept as plain numbers under one lock.

    A prometheus-client child takes a lock and several Python calls per ``inc`` or
    ``observe``; a call updates these once as it starts and once as it ends. `_Collector`
    reads them at scrape time into the same families, labels and samples.
    """

    __slots__ = ("bounds", "buckets", "codes", "created", "handled_order", "labels", "lock",
                 "started", "sum")

    def __init__(self, labels: tuple[str, str, str], bounds: tuple[float, ...],
                 handled_order: list[tuple[_Cells, grpc.StatusCode, list[float]]]) -> None:
        self.labels = labels
        #: Every method's handled counts, in the order they were made (the collector's list):
        #: prometheus-client lists a family's children so, and scrapes keep that order.
        self.handled_order = handled_order
        self.bounds = bounds  # the histogram's upper bounds, +Inf last
        self.lock = threading.Lock()
        self.started = 0.0
        self.buckets = [0.0] * len(bounds)  # observations per bucket (not cumulative)
        self.sum = 0.0
        #: grpc_server_handled_total per code: [count, created].
        self.codes: dict[grpc.StatusCode, list[float]] = {}
        self.created = time.time()


class _Durations:
    """The ``octollm_error_duration_seconds`` counts of one error type."""

    __slots__ = ("buckets", "created", "sum")

    def __init__(self, size: int) -> None:
        self.buckets = [0.0] * size
        self.sum = 0.0
        self.created = time.time()


class _Handled:
    """``grpc_server_handled_total`` for one method and code: ``inc()`` counts a call."""

    __slots__ = ("_cell", "_cells")

    def __init__(self, cells: _Cells, code: grpc.StatusCode) -> None:
        self._cells = cells
        with cells.lock:
            cell = cells.codes.get(code)
            if cell is None:
                cell = cells.codes[code] = [0.0, time.time()]
                cells.handled_order.append((cells, code, cell))
        self._cell = cell

    def inc(self) -> None:
        with self._cells.lock:
            self._cell[0] += 1


class _Handling:
    """``grpc_server_handling_seconds`` for one method: ``observe(seconds)``."""

    __slots__ = ("_cells",)

    def __init__(self, cells: _Cells) -> None:
        self._cells = cells

    def observe(self, seconds: float) -> None:
        cells = self._cells
        index = bisect.bisect_left(cells.bounds, seconds)
        with cells.lock:
            cells.buckets[index] += 1
            cells.sum += seconds


class _Collector:
    """The call families of one registry, read from every method's `_Cells` per scrape."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        #: Guards the error counts (the error path's; each method's cells have their own).
        self.error_lock = threading.Lock()
        #: octollm_errors_total by (error_type, component): [count, created].
        self._errors: dict[tuple[str, str], list[float]] = {}
        #: octollm_error_duration_seconds by error_type: [per-bucket counts, sum, created].
        self._durations: dict[str, _Durations] = {}
        # prometheus-client's own spelling of a bound (its Histogram labels buckets so).
        self._les = [str(floatToGoString(b)) for b in bounds]  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self._methods: dict[tuple[str, str, str], _Cells] = {}
        self._handled_order: list[tuple[_Cells, grpc.StatusCode, list[float]]] = []

    def cells(self, labels: tuple[str, str, str]) -> _Cells:
        """The one `_Cells` of the method with these labels (shared by its servers)."""
        with self._lock:
            found = self._methods.get(labels)
            if found is None:
                found = self._methods[labels] = _Cells(labels, self.bounds,
                                                       self._handled_order)
            return found

    def error_cells(self, error_type: str, component: str) -> tuple[list[float], _Durations]:
        """The count of ``error_type`` errors of ``component``, and their durations."""
        with self.error_lock:
            count = self._errors.get((error_type, component))
            if count is None:
                count = self._errors[(error_type, component)] = [0.0, time.time()]
            durations = self._durations.get(error_type)
            if durations is None:
                durations = self._durations[error_type] = _Durations(len(self.bounds))
            return count, durations

    def describe(self) -> list[Metric]:
        return self._families([], []) + self._error_families(False)

    def collect(self) -> list[Metric]:
        with self._lock:
            methods = list(self._methods.values())
        return self._families(methods, list(self._handled_order)) + self._error_families(True)

    def _error_families(self, live: bool) -> list[Metric]:
        errors = CounterMetricFamily("octollm_errors_total", "Total errors by type",
                                     labels=("error_type", "component"))
        durations = HistogramMetricFamily("octollm_error_duration_seconds",
                                          "Time to detect and handle error",
                                          labels=("error_type",))
        if not live:
            return [errors, durations]
        with self.error_lock:
            counts = [(key, cell[0], cell[1]) for key, cell in self._errors.items()]
            times = [(key, list(d.buckets), d.sum, d.created)
                     for key, d in self._durations.items()]
        for key, value, stamp in counts:
            errors.add_metric(key, value, created=stamp)
        created = []
        for error_type, buckets, total, stamp in times:
            durations.add_metric((error_type,), self._cumulative(buckets), total)
            created.append(Sample("octollm_error_duration_seconds_created",
                                  {"error_type": error_type}, stamp))
        durations.samples.extend(created)
        return [errors, durations]

    def _cumulative(self, buckets: list[float]) -> list[tuple[str, float]]:
        cumulative, running = [], 0.0
        for le, value in zip(self._les, buckets, strict=True):
            running += value
            cumulative.append((le, running))
        return cumulative

    def _families(self, methods: list[_Cells],
                  handled_order: list[tuple[_Cells, grpc.StatusCode, list[float]]],
                  ) -> list[Metric]:
        started = CounterMetricFamily(
            "grpc_server_started_total", "Total number of RPCs started on the server.",
            labels=_METHOD_LABELS)
        handled = CounterMetricFamily(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=(*_METHOD_LABELS, "grpc_code"))
        handling = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            labels=_METHOD_LABELS)
        created = []
        for cells in methods:
            with cells.lock:
                count, buckets, total = cells.started, list(cells.buckets), cells.sum
            labels = cells.labels
            started.add_metric(labels, count, created=cells.created)
            handling.add_metric(labels, self._cumulative(buckets), total)
            created.append(Sample("grpc_server_handling_seconds_created",
                                  dict(zip(_METHOD_LABELS, labels, strict=True)),
                                  cells.created))
        handling.samples.extend(created)
        for cells, code, cell in handled_order:
            with cells.lock:
                value = cell[0]
            handled.add_metric((*cells.labels, _GO_NAMES[code]), value, created=cell[1])
        return [started, handled, handling]


class _Families:
    """The metric families of one registry (created once: a registry rejects duplicates)."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        bounds = tuple(sorted(float(b) for b in buckets))
        if not bounds or bounds[-1] != math.inf:
            bounds += (math.inf,)
        self.calls = _Collector(bounds)
        registry.register(self.calls)


_lock = threading.Lock()
_families: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()


def _families_for(registry: CollectorRegistry, buckets: Sequence[float]) -> _Families:
    with _lock:
        found = _families.get(registry)
        if found is None:
            found = _families[registry] = _Families(registry, buckets)
        return found


class MethodMetrics:
    """The counts of one method: the per-call work is `start` and `succeed` (or `handled`
    and ``handling.observe`` for a call that did not succeed)."""

    __slots__ = ("_cells", "_handled", "_lock", "_ok", "bounds", "handling")

    def __init__(self, families: _Families, labels: tuple[str, str, str]) -> None:
        cells = self._cells = families.calls.cells(labels)
        self._lock = cells.lock
        self.bounds = cells.bounds
        self.handling = _Handling(cells)
        """``grpc_server_handling_seconds``: ``observe(seconds)``."""
        self._handled: dict[grpc.StatusCode, _Handled] = {}
        self._ok = _Handled(cells, grpc.StatusCode.OK)._cell

    def start(self) -> None:
        """Count a started call."""
        cells = self._cells
        with self._lock:
            cells.started += 1

    def succeed(self, seconds: float) -> None:
        """Count a call that ended ``OK`` after ``seconds`` (handled and handling time)."""
        cells = self._cells
        index = bisect.bisect_left(self.bounds, seconds)
        with self._lock:
            self._ok[0] += 1
            cells.buckets[index] += 1
            cells.sum += seconds

    def handled(self, code: grpc.StatusCode) -> _Handled:
        """The ``grpc_server_handled_total`` counter of ``code`` (``inc()``)."""
        found = self._handled.get(code)
        if found is None:
            found = self._handled[code] = _Handled(self._cells, code)
        return found


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
        self._errors: dict[str, tuple[list[float], _Durations]] = {}

    def for_method(self, rpc_type: str, service: str, method: str) -> MethodMetrics:
        """The bound children for one method (build once per method, keep it)."""
        return MethodMetrics(self._families, (rpc_type, service, method))

    def error(self, error_type: str, duration: float | None = None) -> None:
        """Count one error of ``error_type`` that took ``duration`` seconds to handle (not
        timed when ``None``: a refused call is only counted)."""
        calls = self._families.calls
        cells = self._errors.get(error_type)
        if cells is None:
            cells = self._errors[error_type] = calls.error_cells(error_type, self.component)
        count, durations = cells
        if duration is None:
            with calls.error_lock:
                count[0] += 1
            return
        index = bisect.bisect_left(calls.bounds, duration)
        with calls.error_lock:
            count[0] += 1
            durations.buckets[index] += 1
            durations.sum += duration


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
