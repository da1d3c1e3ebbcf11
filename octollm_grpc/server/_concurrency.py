"""An adaptive limit on the calls a server runs at once:
[`ConcurrencyLimit`][octollm_grpc.server.ConcurrencyLimit].

Given as ``server_interceptors(concurrency=ConcurrencyLimit(...))`` (either stack), it admits a
call only while fewer than the current limit are in flight, and refuses the others before
their handler runs with ``RESOURCE_EXHAUSTED`` (``RetryInfo`` and ``grpc-retry-pushback-ms``),
through the same cheap path as a rate-limit refusal (`octollm_grpc.server._shedding`).
The limit moves with the measured latency (`
GradientLimit`): it shrinks when calls start to queue and grows back when latency is normal.

Every admitted unary call gives one latency sample when it ends, however it ends (success,
error, cancellation, deadline); a refused call gives none, nor does a streaming one (its
duration is the stream's life, not the server's latency). Health checks and reflection are never
limited. Partitions give classes of calls a guaranteed share of the limit. No gRPC here.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from octollm_grpc._core.gradient import GradientLimit
from octollm_grpc.errors import RateLimitError
from octollm_grpc.server._shedding import advertised_wait

__all__ = [
    "DEFAULT_PARTITION",
    "DEFAULT_UNLIMITED",
    "SHED_EVENT",
    "ConcurrencyLimit",
    "ConcurrencyRejection",
    "Permit",
    "Route",
]

#: Services never limited (and never counted in flight): health checks and reflection must
#: answer an overloaded server, or it looks dead and is restarted at the worst moment.
DEFAULT_UNLIMITED = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})
#: The partition of calls no partition rule names.
DEFAULT_PARTITION = "default"
#: The aggregated log event of concurrency refusals (one per partition and second of shedding).
SHED_EVENT = "grpc.call.shed"
#: The share of the limit's latency average given to each new sample (for the pushback only).
_RTT_ALPHA = 0.1


class Partition:
    """A class of calls with a guaranteed share of the limit, and its calls in flight."""

    __slots__ = ("guaranteed", "in_flight", "name", "share")

    def __init__(self, name: str, share: float) -> None:
        self.name = name
        self.share = share
        self.in_flight = 0
        self.guaranteed = 0


class Permit:
    """An admitted call's hold on the limit; give it back with `ConcurrencyLimit.release`."""

    __slots__ = ("in_flight", "partition", "sampled", "start")

    def __init__(self, partition: Partition, in_flight: int, start: float,
                 sampled: bool) -> None:
        self.partition = partition
        self.in_flight = in_flight
        self.start = start
        self.sampled = sampled


class Route:
    """What one method needs per call: its partition, whether its calls' durations are
    latency samples, and its refusal counters (if any)."""

    __slots__ = ("_counter", "_labels", "_refused", "method", "partition", "sampled")

    def __init__(self, method: str, partition: Partition, counter: Counter | None,
                 sampled: bool = True) -> None:
        self.method = method
        self.partition = partition
        self.sampled = sampled
        self._counter = counter
        service, _, name = method.lstrip("/").partition("/")
        self._labels = (service, name)
        self._refused: dict[str, Any] = {}

    def refused(self, partition: Partition) -> None:
        """Count one refusal of this method in ``partition``."""
        if self._counter is None:
            return
        child = self._refused.get(partition.name)
        if child is None:
            child = self._refused[partition.name] = self._counter.labels(
                *self._labels, partition.name)
        child.inc()


class ConcurrencyLimit:
    """An adaptive limit on the calls in flight, for ``server_interceptors(concurrency=...)``.

    Args:
        min_limit: the limit never goes below this (at least 1).
        max_limit: nor above this.
        initial_limit: the limit at start, and the resting limit a lightly loaded server
            returns to (default: ``min(20, max_limit)``, at least ``min_limit``). Set it to
            about twice the calls in flight at the normal peak: the limit grows above it only
            under load, and a sudden overload is cut from there.
        tolerance: how much slower than the no-load latency calls may get before the limit
            shrinks (1.5: half as slow again).
        smoothing: the weight of each sample's step (0 < smoothing <= 1).
        window: samples the no-load latency averages over (only calls that did not queue),
            and per window of its floor (the minimum of the last one to two windows).
        queue_size: how much the limit grows per sample while latency is normal (the queue
            it allows at the equilibrium).
        partitions: partition name -> guaranteed share of the limit (shares sum to at most
            1). Calls of a partition are refused only when the whole limit is in use *and*
            the partition has its share in flight, so a partition under its share borrows
            nothing and loses nothing. ``"default"`` (calls no rule names) gets what the
            others leave unless given.
        methods: full method name (``/pkg.Service/Method``) or service name
            (``pkg.Service``) -> the partition of its calls, or ``None`` for never limited.
        partition_metadata: a metadata key whose value names the caller's partition (a
            caller class, e.g. ``x-priority``); it wins over ``methods`` when it names a
            known partition.
        unlimited: services or full method names never limited (default: health checks
            and reflection).
        clock: a monotonic clock in seconds (latency samples are its differences).

    Raises:
        ValueError: for a bound out of range, unknown partitions in ``methods``, or shares
            that are negative or sum above 1.

    Thread-safe: one instance may serve a sync and an aio stack at once (then they share the
    limit). Metrics (with a stack's ``metrics`` on): ``octollm_concurrency_limit``,
    ``octollm_concurrency_in_flight{partition}``, ``octollm_concurrency_refused_total{
    grpc_service, grpc_method, partition}``.
    """

    def __init__(
        self,
        *,
        min_limit: int = 1,
        max_limit: int = 1000,
        initial_limit: int | None = None,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        window: int = 300,
        queue_size: float = 1.0,
        partitions: Mapping[str, float] | None = None,
        methods: Mapping[str, str | None] | None = None,
        partition_metadata: str | None = None,
        unlimited: Iterable[str] = DEFAULT_UNLIMITED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("min_limit", min_limit), ("max_limit", max_limit),
                            ("initial_limit", initial_limit)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an int, not {value!r}")
        if initial_limit is None:
            initial_limit = max(min_limit, min(20, max_limit))
        self._algorithm = GradientLimit(
            initial_limit=initial_limit, min_limit=min_limit, max_limit=max_limit,
            tolerance=tolerance, smoothing=smoothing, window=window, queue_size=queue_size)
        shares = dict(partitions or {})
        for name, share in shares.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"partition {name!r}: share must be in [0, 1], not {share!r}")
        named = sum(share for name, share in shares.items() if name != DEFAULT_PARTITION)
        if named + shares.get(DEFAULT_PARTITION, 0.0) > 1.0 + 1e-9:
            raise ValueError(f"partition shares sum to more than 1: {shares!r}")
        shares.setdefault(DEFAULT_PARTITION, max(0.0, 1.0 - named))
        self._partitions = {name: Partition(name, share) for name, share in shares.items()}
        self._methods = dict(methods or {})
        for key, target in self._methods.items():
            if target is not None and target not in self._partitions:
                raise ValueError(f"methods[{key!r}] names an unknown partition {target!r}")
        self._metadata_key = partition_metadata.lower() if partition_metadata else None
        self._unlimited = frozenset(unlimited)
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._rtt = 0.0
        self._samples = 0
        self._limit = max(1, int(self._algorithm.limit))
        self._set_guarantees()

    # -- state ----------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The current limit: calls are admitted while fewer than this are in flight."""
        return self._limit

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet ended (all partitions)."""
        return self._in_flight

    @property
    def samples(self) -> int:
        """Latency samples taken so far (one per admitted call that reached its handler)."""
        return self._samples

    def partition_in_flight(self) -> dict[str, int]:
        """Calls in flight per partition.

        Returns:
            partition name -> its calls admitted and not yet ended.
        """
        with self._lock:
            return {name: p.in_flight for name, p in self._partitions.items()}

    # -- per method -----------------------------------------------------------------------

    def route(
        self, method: str, registry: CollectorRegistry | None = None, *,
        streaming: bool = False,
    ) -> Route | None:
        """How calls of ``method`` are admitted (the stack resolves it once per method).

        Args:
            method: the full method name, ``/pkg.Service/Method``.
            registry: where the refusals of this method are counted (none: not counted);
                registering also publishes the limit and the calls in flight there.
            streaming: the method streams requests or responses; its calls take a place like
                any other, but their duration (the stream's life, paced by the client) is no
                latency sample.

        Returns:
            the method's route, or ``None`` when it is never limited.
        """
        service = method.lstrip("/").partition("/")[0]
        if method in self._unlimited or service in self._unlimited:
            return None
        for key in (method, service):
            if key in self._methods:
                name = self._methods[key]
                if name is None:
                    return None
                partition = self._partitions[name]
                break
        else:
            partition = self._partitions[DEFAULT_PARTITION]
        counter = _metrics_for(registry, self).refused if registry is not None else None
        return Route(method, partition, counter, sampled=not streaming)

    # -- per call -------------------------------------------------------------------------

    def acquire(
        self, route: Route, metadata: Iterable[Any] | None
    ) -> Permit | ConcurrencyRejection:
        """Admit a call of ``route``, or refuse it.

        Args:
            route: the method's route (`route`).
            metadata: the call's invocation metadata (read for ``partition_metadata``).

        Returns:
            the call's `Permit` (give it back with `release`), or its refusal
            (counted in the method's refusals), which says when capacity is expected to free.
        """
        partition = route.partition
        wanted = self._metadata_key
        if wanted is not None and metadata:
            for key, value in metadata:
                if key == wanted:
                    partition = self._partitions.get(value, partition) \
                        if isinstance(value, str) else partition
                    break
        with self._lock:
            in_flight = self._in_flight
            if in_flight >= self._limit and partition.in_flight >= partition.guaranteed:
                # One completion is due about every rtt / limit seconds.
                wait = max(0.001, self._rtt / max(1, self._limit))
                refused = True
                limit = self._limit
            else:
                self._in_flight = in_flight = in_flight + 1
                partition.in_flight += 1
                refused = False
        if refused:
            route.refused(partition)
            return ConcurrencyRejection(limit, wait, partition.name)
        return Permit(partition, in_flight, self._clock(), route.sampled)

    def release(self, permit: Permit, *, sample: bool = True) -> None:
        """End an admitted call: free its place and take its latency sample.

        Args:
            permit: what `acquire` gave the call.
            sample: whether its time since admission is a latency sample (``False`` for a
                call that never reached its handler; a streaming call's never is).
        """
        rtt = self._clock() - permit.start if sample and permit.sampled else 0.0
        with self._lock:
            self._in_flight -= 1
            permit.partition.in_flight -= 1
            if rtt > 0.0:
                self._samples += 1
                self._rtt = rtt if self._rtt == 0.0 else self._rtt + (rtt - self._rtt) * _RTT_ALPHA
                limit = int(self._algorithm.update(rtt, permit.in_flight))
                if limit != self._limit:
                    self._limit = limit if limit > 1 else 1
                    self._set_guarantees()

    def sample(self, rtt: float, in_flight: int) -> int:
        """Feed one latency sample directly (tests, or latencies measured elsewhere).

        Args:
            rtt: the call's latency in seconds.
            in_flight: the calls in flight when the sampled call started (itself included).

        Returns:
            the new limit.
        """
        with self._lock:
            self._samples += 1
            self._set_limit(self._algorithm.update(rtt, in_flight))
            self._set_guarantees()
            return self._limit

    def _set_limit(self, limit: float) -> None:
        self._limit = max(1, int(limit))

    def _set_guarantees(self) -> None:
        for partition in self._partitions.values():
            partition.guaranteed = math.ceil(self._limit * partition.share - 1e-9)

    def _gauges(self) -> Iterator[tuple[str, float]]:
        with self._lock:
            yield "", float(self._limit)
            for name, partition in self._partitions.items():
                yield name, float(partition.in_flight)


class ConcurrencyRejection:
    """A call the concurrency limit refused: what its status and its log event say.

    ``wait`` is the advertised wait (see `octollm_grpc.server._shedding.advertised_wait`);
    ``key`` is the partition (its refusals are logged together).
    """

    __slots__ = ("key", "limit", "wait")

    def __init__(self, limit: int, wait: float, partition: str) -> None:
        self.limit = limit
        self.key = partition
        self.wait = advertised_wait(wait)

    def cache_key(self) -> tuple[object, ...]:
        """What the refusal's status depends on (besides the request id)."""
        return ("concurrency", self.limit, round(self.wait * 1000.0))

    def error(self) -> RateLimitError:
        """The error the call ends with: a ``RateLimitError`` (``RESOURCE_EXHAUSTED``), the
        OctoLLM error-handling standard's class for "too much, come back later"."""
        error = RateLimitError.restore(
            f"Server overloaded: {self.limit} calls in flight, its current concurrency limit",
            None, {"limit": self.limit, "key": "concurrency"}, self.wait)
        assert isinstance(error, RateLimitError)
        return error


# -- metrics ----------------------------------------------------------------------------------


class _Metrics:
    """The families of one registry: the refusal counter, and gauges read at scrape time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.limiters: weakref.WeakSet[ConcurrencyLimit] = weakref.WeakSet()
        self.refused = Counter(
            "octollm_concurrency_refused_total",
            "Calls refused by the adaptive concurrency limit, before their handler ran.",
            ("grpc_service", "grpc_method", "partition"),
            registry=registry,
        )
        registry.register(_Gauges(self.limiters))


class _Gauges:
    """``octollm_concurrency_limit`` and ``octollm_concurrency_in_flight``, read per scrape
    (nothing on the call path); summed over the limiters sharing a registry."""

    def __init__(self, limiters: weakref.WeakSet[ConcurrencyLimit]) -> None:
        self._limiters = limiters

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> list[Metric]:
        return list(self._families(live=True))

    def _families(self, live: bool = False) -> Iterator[Metric]:
        limit = GaugeMetricFamily(
            "octollm_concurrency_limit",
            "The adaptive concurrency limit: calls admitted while fewer are in flight.")
        in_flight = GaugeMetricFamily(
            "octollm_concurrency_in_flight",
            "Calls admitted by the adaptive concurrency limit and not yet ended.",
            labels=("partition",))
        if live:
            total = 0.0
            per_partition: dict[str, float] = {}
            for limiter in list(self._limiters):
                for name, value in limiter._gauges():
                    if name:
                        per_partition[name] = per_partition.get(name, 0.0) + value
                    else:
                        total += value
            limit.add_metric((), total)
            for name, value in sorted(per_partition.items()):
                in_flight.add_metric((name,), value)
        yield limit
        yield in_flight


_lock = threading.Lock()
_registries: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = \
    weakref.WeakKeyDictionary()


def _metrics_for(registry: CollectorRegistry, limiter: ConcurrencyLimit) -> _Metrics:
    with _lock:
        found = _registries.get(registry)
        if found is None:
            found = _registries[registry] = _Metrics(registry)
        found.limiters.add(limiter)
        return found

