"""Prometheus metrics of client calls, on the registry given to ``resilient_channel``.

Names follow go-grpc-prometheus's client side, so its dashboards work unchanged:

- ``grpc_client_started_total{grpc_type, grpc_service, grpc_method}``: calls started;
- ``grpc_client_handled_total{..., grpc_code}``: calls finished, one per call, its final
  outcome after every retry (a call the breaker refused counts as ``Unavailable``);
- ``grpc_client_handling_seconds{...}`` (histogram): from start to final outcome, retries
  and backoff included, on the channel's clock.

Ours, about the attempts inside a call:

- ``octollm_client_attempts_total{..., grpc_code}``: every attempt sent, with the code the
  retry layer saw (a response stream's attempt is ``OK`` once its first message arrived);
- ``octollm_client_retries_total{...}``: retries started (the backoff was waited);
- ``octollm_client_throttled_total{...}``: retries (and hedges) the retry budget refused;
- ``octollm_client_hedges_total{...}``: hedges sent (attempts of a hedged call beyond its
  first; a hedged method's attempts, losers cancelled included, are in the attempts count).

Label values stay bounded: a method name that is not ``/service/method``, or any method past
the first ``max_methods`` a registry has seen, is counted under ``grpc_service`` and
``grpc_method`` = ``"unknown"``.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Sequence

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry

from octollm_grpc.observability._method_counts import (
    CODED,
    COUNT,
    HISTOGRAM,
    Count,
    Layout,
    MethodCollector,
    Observe,
    bounds_of,
)

__all__ = ["UNKNOWN", "ClientMethodMetrics", "ClientMetrics"]

#: The ``grpc_service`` / ``grpc_method`` label of methods beyond the bound.
UNKNOWN = "unknown"

_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: The families, in the order the prometheus-client Counters and Histogram that kept them
#: before were registered (a scrape lists them so).
_LAYOUT: Layout = (
    (COUNT, "grpc_client_started_total", "Total number of RPCs started on the client."),
    (CODED, "grpc_client_handled_total",
     "Total number of RPCs completed by the client, regardless of success or failure."),
    (HISTOGRAM, "grpc_client_handling_seconds",
     "Histogram of response latency (seconds) of the gRPC until it is finished by the "
     "application."),
    (CODED, "octollm_client_attempts_total",
     "Attempts sent by the client, by their status code."),
    (COUNT, "octollm_client_retries_total", "Retries the client started."),
    (COUNT, "octollm_client_throttled_total", "Retries the retry budget refused."),
    (COUNT, "octollm_client_hedges_total", "Hedged attempts the client sent."),
)
# Indexes among the layout's COUNT families, then among its CODED families.
_STARTED, _RETRIES, _THROTTLED, _HEDGES = 0, 1, 2, 3
_HANDLED, _ATTEMPTS = 0, 1


class _Families:
    """The client metric families of one registry (a registry rejects duplicates)."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self.calls = MethodCollector(_LAYOUT, bounds_of(buckets))
        registry.register(self.calls)
        self.methods: dict[str, ClientMethodMetrics] = {}
        self.unknown: dict[str, ClientMethodMetrics] = {}  # by grpc_type
        self.lock = threading.Lock()


_lock = threading.Lock()
_families: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()


class ClientMethodMetrics:
    """The counts of one method. Per call: `start`, then `handled_ok` or `handled`, and per
    attempt `attempt_ok` or `attempt`; ``retries``, ``throttled`` and ``hedges`` (``inc()``),
    ``started`` (``inc()``, as `start`) and ``handling`` (``observe(seconds)``) for the rest.
    """

    __slots__ = ("_attempt_ok", "_attempts", "_bounds", "_buckets", "_cells", "_counts",
                 "_handled", "_handled_ok", "_lock", "handling", "hedges", "retries", "started",
                 "throttled")

    def __init__(self, families: _Families, labels: tuple[str, str, str]) -> None:
        cells = self._cells = families.calls.cells(labels)
        self._lock = cells.lock
        self._counts = cells.counts
        self._buckets = cells.buckets
        self._bounds = cells.bounds
        self.started = Count(cells, _STARTED)
        self.handling = Observe(cells)
        self.retries = Count(cells, _RETRIES)
        self.throttled = Count(cells, _THROTTLED)
        self.hedges = Count(cells, _HEDGES)
        #: [count, created] per code, made on first use (a code never seen shows no series).
        self._handled: dict[grpc.StatusCode, list[float]] = {}
        self._attempts: dict[grpc.StatusCode, list[float]] = {}
        # The OK counts, the per-call case, without a lookup (made on first use, like the rest:
        # a method that never succeeded shows no OK series).
        self._handled_ok: list[float] | None = None
        self._attempt_ok: list[float] | None = None

    def start(self) -> None:
        """Count a started call."""
        with self._lock:
            self._counts[0] += 1  # _STARTED

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        """Count a finished call with its final ``code``, which took ``seconds``."""
        cell = self._handled.get(code)
        if cell is None:
            cell = self._handled[code] = self._cells.coded_cell(_HANDLED, code)
        self._finished(cell, seconds)

    def handled_ok(self, seconds: float) -> None:
        """``handled(OK, seconds)``: a call that succeeded."""
        cell = self._handled_ok
        if cell is None:
            cell = self._handled_ok = self._cells.coded_cell(_HANDLED, grpc.StatusCode.OK)
        self._finished(cell, seconds)

    def _finished(self, cell: list[float], seconds: float) -> None:
        index = bisect.bisect_left(self._bounds, seconds)
        with self._lock:
            cell[0] += 1
            self._buckets[index] += 1
            self._cells.sum += seconds

    def attempt_ok(self) -> None:
        """``attempt(OK)``: an attempt that succeeded."""
        cell = self._attempt_ok
        if cell is None:
            cell = self._attempt_ok = self._cells.coded_cell(_ATTEMPTS, grpc.StatusCode.OK)
        with self._lock:
            cell[0] += 1

    def attempt(self, code: grpc.StatusCode) -> None:
        """Count one attempt that ended (as far as retrying goes) with ``code``."""
        cell = self._attempts.get(code)
        if cell is None:
            cell = self._attempts[code] = self._cells.coded_cell(_ATTEMPTS, code)
        with self._lock:
            cell[0] += 1


def _split(method: str) -> tuple[str, str] | None:
    parts = method.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class ClientMetrics:
    """Where a channel's calls are counted: ``registry`` (default: prometheus_client's global).

    Channels sharing a registry share its families and its per-method children; the first
    ``max_methods`` distinct methods get labels of their own, later ones ``"unknown"``.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 buckets: Sequence[float] = _BUCKETS, max_methods: int = 500) -> None:
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        with _lock:
            found = _families.get(self.registry)
            if found is None:
                found = _families[self.registry] = _Families(self.registry, tuple(buckets))
        self._families = found
        self._max_methods = max_methods

    def method(self, method: str | bytes, grpc_type: str = "unary") -> ClientMethodMetrics:
        """The children of ``method`` (``/pkg.Service/Method``); ``grpc_type`` is used the
        first time a method is seen (a method has one shape)."""
        name = method.decode() if isinstance(method, bytes) else method
        families = self._families
        found = families.methods.get(name)
        if found is not None:
            return found
        with families.lock:
            found = families.methods.get(name)
            if found is None:
                parts = _split(name)
                if parts is None or len(families.methods) >= self._max_methods:
                    # Not cached by name: the names past the bound are what must not grow.
                    found = families.unknown.get(grpc_type)
                    if found is None:
                        found = families.unknown[grpc_type] = ClientMethodMetrics(
                            families, (grpc_type, UNKNOWN, UNKNOWN))
                    return found
                found = families.methods[name] = ClientMethodMetrics(
                    families, (grpc_type, *parts))
            return found
