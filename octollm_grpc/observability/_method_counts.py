"""Per-method call counts kept as plain numbers, read at scrape time as Prometheus families.

A prometheus-client child takes a lock and several Python calls per ``inc`` or ``observe``;
the server's and the client's call metrics instead update one method's plain counts under one
lock, and a `MethodCollector` reads them, per scrape, into the families, labels and samples
prometheus-client's own ``Counter`` and ``Histogram`` would expose (names, label order, bucket
bounds and their spelling, ``_created`` series, the order series are listed in).

A `Layout` says which families a collector exposes, in order, and of which kind:

- ``COUNT``: one count per method (a ``Counter`` whose child is made with the method);
- ``CODED``: one count per method and status code, made on the code's first use (a
  ``Counter`` with a trailing ``grpc_code`` label, Go's spelling);
- ``HISTOGRAM``: one histogram per method (a ``Histogram`` whose child is made with the
  method).
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Sequence

import grpc
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["CODED", "COUNT", "GO_NAMES", "HISTOGRAM", "METHOD_LABELS", "Cells", "Coded",
           "CodedCount", "Count", "Layout", "MethodCollector", "Observe", "bounds_of",
           "go_code_name"]

METHOD_LABELS = ("grpc_type", "grpc_service", "grpc_method")

COUNT, CODED, HISTOGRAM = "count", "coded", "histogram"

#: One family: (kind, name, help).
Layout = tuple[tuple[str, str, str], ...]


def _go_name(code: grpc.StatusCode) -> str:
    if code is grpc.StatusCode.OK:
        return "OK"
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"  # Go's spelling
    return "".join(part.capitalize() for part in code.name.split("_"))


GO_NAMES = {code: _go_name(code) for code in grpc.StatusCode}


def go_code_name(code: grpc.StatusCode) -> str:
    """The ``grpc_code`` label value for ``code`` (Go's ``codes.Code.String()``)."""
    return GO_NAMES[code]


def bounds_of(buckets: Sequence[float]) -> tuple[float, ...]:
    """A histogram's upper bounds from ``buckets``: sorted, ``+Inf`` last."""
    bounds = tuple(sorted(float(b) for b in buckets))
    if not bounds or bounds[-1] != math.inf:
        bounds += (math.inf,)
    return bounds


#: A coded count as listed: its method's cells, its code, and [count, created].
Coded = tuple["Cells", grpc.StatusCode, list[float]]


class Cells:
    """The counts of one method, plain numbers guarded by ``lock``.

    ``counts[i]`` is the layout's i-th ``COUNT`` family; ``buckets`` (per bucket, not
    cumulative) and ``sum`` are its ``HISTOGRAM``; ``coded[i]`` maps a code to the
    ``[count, created]`` of the layout's i-th ``CODED`` family (made with `coded_cell`).
    """

    __slots__ = ("bounds", "buckets", "coded", "counts", "created", "labels", "lock", "orders",
                 "sum")

    def __init__(self, labels: tuple[str, str, str], bounds: tuple[float, ...],
                 counts: int, orders: tuple[list[Coded], ...]) -> None:
        self.labels = labels
        self.bounds = bounds
        self.lock = threading.Lock()
        self.counts = [0.0] * counts
        self.buckets = [0.0] * len(bounds)
        self.sum = 0.0
        self.coded: tuple[dict[grpc.StatusCode, list[float]], ...] = tuple({} for _ in orders)
        #: Per CODED family, every method's coded counts in the order they were made (the
        #: collector's lists): prometheus-client lists a family's children so.
        self.orders = orders
        self.created = time.time()

    def coded_cell(self, family: int, code: grpc.StatusCode) -> list[float]:
        """The ``[count, created]`` of ``code`` in the ``family``-th ``CODED`` family (made,
        and listed, on first use)."""
        with self.lock:
            cell = self.coded[family].get(code)
            if cell is None:
                cell = self.coded[family][code] = [0.0, time.time()]
                self.orders[family].append((self, code, cell))
            return cell


class Count:
    """One method's count in a ``COUNT`` family, for the paths that are not per call:
    ``inc()``."""

    __slots__ = ("_counts", "_index", "_lock")

    def __init__(self, cells: Cells, index: int) -> None:
        self._lock = cells.lock
        self._counts = cells.counts
        self._index = index

    def inc(self) -> None:
        with self._lock:
            self._counts[self._index] += 1


class CodedCount:
    """One method's count of one code in a ``CODED`` family: ``inc()``."""

    __slots__ = ("_cell", "_lock")

    def __init__(self, cells: Cells, family: int, code: grpc.StatusCode) -> None:
        self._lock = cells.lock
        self._cell = cells.coded_cell(family, code)

    def inc(self) -> None:
        with self._lock:
            self._cell[0] += 1


class Observe:
    """One method's ``HISTOGRAM``: ``observe(seconds)``."""

    __slots__ = ("_cells",)

    def __init__(self, cells: Cells) -> None:
        self._cells = cells

    def observe(self, seconds: float) -> None:
        cells = self._cells
        index = bisect.bisect_left(cells.bounds, seconds)
        with cells.lock:
            cells.buckets[index] += 1
            cells.sum += seconds


class MethodCollector:
    """The families of ``layout``, read from every method's `Cells` per scrape."""

    def __init__(self, layout: Layout, bounds: tuple[float, ...]) -> None:
        self.layout = layout
        self.bounds = bounds
        # prometheus-client's own spelling of a bound (its Histogram labels buckets so).
        self._les = [str(floatToGoString(b)) for b in bounds]  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self._methods: dict[tuple[str, str, str], Cells] = {}
        self._counts = sum(kind == COUNT for kind, _name, _help in layout)
        self._orders: tuple[list[Coded], ...] = tuple(
            [] for kind, _name, _help in layout if kind == CODED)

    def cells(self, labels: tuple[str, str, str]) -> Cells:
        """The one `Cells` of the method with these labels (shared by all who count it)."""
        with self._lock:
            found = self._methods.get(labels)
            if found is None:
                found = self._methods[labels] = Cells(labels, self.bounds, self._counts,
                                                      self._orders)
            return found

    def describe(self) -> list[Metric]:
        return self.method_families(live=False)

    def collect(self) -> list[Metric]:
        return self.method_families(live=True)

    def cumulative(self, buckets: list[float]) -> list[tuple[str, float]]:
        """Per-bucket counts as a histogram family's cumulative ``(le, count)`` pairs."""
        cumulative, running = [], 0.0
        for le, value in zip(self._les, buckets, strict=True):
            running += value
            cumulative.append((le, running))
        return cumulative

    def method_families(self, live: bool) -> list[Metric]:
        """The layout's families; empty unless ``live`` (``describe`` needs only names)."""
        with self._lock:
            methods = list(self._methods.values()) if live else []
        orders = [list(order) for order in self._orders] if live else [[] for _ in self._orders]
        snapshots = []
        for cells in methods:
            with cells.lock:
                snapshots.append((cells, list(cells.counts), list(cells.buckets), cells.sum))
        families: list[Metric] = []
        count_index = coded_index = 0
        for kind, name, documentation in self.layout:
            if kind == COUNT:
                counter = CounterMetricFamily(name, documentation, labels=METHOD_LABELS)
                for cells, counts, _buckets, _total in snapshots:
                    counter.add_metric(cells.labels, counts[count_index], created=cells.created)
                count_index += 1
                families.append(counter)
            elif kind == CODED:
                coded = CounterMetricFamily(name, documentation,
                                            labels=(*METHOD_LABELS, "grpc_code"))
                for cells, code, cell in orders[coded_index]:
                    with cells.lock:
                        value = cell[0]
                    coded.add_metric((*cells.labels, GO_NAMES[code]), value, created=cell[1])
                coded_index += 1
                families.append(coded)
            else:
                histogram = HistogramMetricFamily(name, documentation, labels=METHOD_LABELS)
                created = []
                for cells, _counts, buckets, total in snapshots:
                    histogram.add_metric(cells.labels, self.cumulative(buckets), total)
                    created.append(Sample(name + "_created",
                                          dict(zip(METHOD_LABELS, cells.labels, strict=True)),
                                          cells.created))
                histogram.samples.extend(created)
                families.append(histogram)
        return families
