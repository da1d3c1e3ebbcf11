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

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram

from octollm_grpc.observability._server_metrics import go_code_name

__all__ = ["UNKNOWN", "ClientMethodMetrics", "ClientMetrics"]

#: The ``grpc_service`` / ``grpc_method`` label of methods beyond the bound.
UNKNOWN = "unknown"

_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class _Families:
    """The client metric families of one registry (a registry rejects duplicates)."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self.started = Counter(
            "grpc_client_started_total", "Total number of RPCs started on the client.",
            _LABELS, registry=registry)
        self.handled = Counter(
            "grpc_client_handled_total",
            "Total number of RPCs completed by the client, regardless of success or failure.",
            (*_LABELS, "grpc_code"), registry=registry)
        self.handling = Histogram(
            "grpc_client_handling_seconds",
            "Histogram of response latency (seconds) of the gRPC until it is finished by the "
            "application.", _LABELS, buckets=buckets, registry=registry)
        self.attempts = Counter(
            "octollm_client_attempts_total", "Attempts sent by the client, by their status code.",
            (*_LABELS, "grpc_code"), registry=registry)
        self.retries = Counter(
            "octollm_client_retries_total", "Retries the client started.", _LABELS,
            registry=registry)
        self.throttled = Counter(
            "octollm_client_throttled_total", "Retries the retry budget refused.", _LABELS,
            registry=registry)
        self.hedges = Counter(
            "octollm_client_hedges_total", "Hedged attempts the client sent.", _LABELS,
            registry=registry)
        self.methods: dict[str, ClientMethodMetrics] = {}
        self.unknown: dict[str, ClientMethodMetrics] = {}  # by grpc_type
        self.lock = threading.Lock()


_lock = threading.Lock()
_families: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()


class ClientMethodMetrics:
    """The label-bound children of one method: per call, only ``inc`` and ``observe``."""

    __slots__ = ("_attempt_ok", "_attempts", "_families", "_handled", "_handled_ok", "_labels",
                 "handling", "hedges", "retries", "started", "throttled")

    def __init__(self, families: _Families, labels: tuple[str, str, str]) -> None:
        self._families = families
        self._labels = labels
        self.started: Any = families.started.labels(*labels)
        self.handling: Any = families.handling.labels(*labels)
        self.retries: Any = families.retries.labels(*labels)
        self.throttled: Any = families.throttled.labels(*labels)
        self.hedges: Any = families.hedges.labels(*labels)
        self._handled: dict[grpc.StatusCode, Any] = {}
        self._attempts: dict[grpc.StatusCode, Any] = {}
        # The OK children, the per-call case, without a lookup (made on first use, like the rest:
        # a method that never succeeded shows no OK series).
        self._handled_ok: Any = None
        self._attempt_ok: Any = None

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        """Count a finished call with its final ``code``, which took ``seconds``."""
        self._child(self._handled, self._families.handled, code).inc()
        self.handling.observe(seconds)

    def handled_ok(self, seconds: float) -> None:
        """``handled(OK, seconds)``: a call that succeeded."""
        child = self._handled_ok
        if child is None:
            child = self._handled_ok = self._child(self._handled, self._families.handled,
                                                   grpc.StatusCode.OK)
        child.inc()
        self.handling.observe(seconds)

    def attempt_ok(self) -> None:
        """``attempt(OK)``: an attempt that succeeded."""
        child = self._attempt_ok
        if child is None:
            child = self._attempt_ok = self._child(self._attempts, self._families.attempts,
                                                   grpc.StatusCode.OK)
        child.inc()

    def _child(self, children: dict[grpc.StatusCode, Any], family: Any,
               code: grpc.StatusCode) -> Any:
        child = children.get(code)
        if child is None:
            child = children[code] = family.labels(*self._labels, go_code_name(code))
        return child

    def attempt(self, code: grpc.StatusCode) -> None:
        """Count one attempt that ended (as far as retrying goes) with ``code``."""
        self._child(self._attempts, self._families.attempts, code).inc()


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
