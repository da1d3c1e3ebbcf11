"""Prometheus metrics of circuit breakers, registered once per registry.

- ``octollm_client_circuit_state{target,method}``: 0 closed, 1 half-open, 2 open.
- ``octollm_client_circuit_transitions_total{target,method,from_state,to_state}``.
- ``octollm_client_circuit_rejected_total{target,method}``: calls failed fast, never sent.
- ``octollm_client_circuit_operations_total{target,method,operation}``: ``reset`` and
  ``force_open`` calls by an operator.

``method`` is ``""`` for a breaker shared by all methods of a target.
"""

from __future__ import annotations

import threading
import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

__all__ = ["BreakerMetrics"]

_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, BreakerMetrics] = (
    weakref.WeakKeyDictionary()
)


class BreakerMetrics:
    """The four breaker metrics in one registry; get one with `for_registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.state = Gauge(
            "octollm_client_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["target", "method"],
            registry=registry,
        )
        self.transitions = Counter(
            "octollm_client_circuit_transitions",
            "Circuit breaker state changes.",
            ["target", "method", "from_state", "to_state"],
            registry=registry,
        )
        self.rejected = Counter(
            "octollm_client_circuit_rejected",
            "Calls a circuit breaker failed fast without sending them.",
            ["target", "method"],
            registry=registry,
        )
        self.operations = Counter(
            "octollm_client_circuit_operations",
            "Circuit breaker resets and forced openings by an operator.",
            ["target", "method", "operation"],
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> BreakerMetrics:
        """The metrics of ``registry`` (default: prometheus_client's global one)."""
        registry = REGISTRY if registry is None else registry
        with _lock:
            metrics = _by_registry.get(registry)
            if metrics is None:
                metrics = _by_registry[registry] = cls(registry)
            return metrics
