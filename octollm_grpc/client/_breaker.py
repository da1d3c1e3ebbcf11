"""The gRPC client's circuit breaker: the state machine of `octollm_grpc._core.breaker`
with gRPC's vocabulary (failures classified by status code, ``CircuitOpenError`` when open).

It is not [`octollm_grpc.resilience.CircuitBreaker`][octollm_grpc.resilience.CircuitBreaker] (the
standard's breaker for any
callable): this one is per target (optionally per method) and fed by a channel's calls.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

import grpc
from prometheus_client import CollectorRegistry

from octollm_grpc._core.breaker import BreakerCore, BreakerLimits, BreakerListener
from octollm_grpc.client._policy import status_codes
from octollm_grpc.codes import BREAKER_FAILURES
from octollm_grpc.errors import CircuitOpenError

__all__ = [
    "DEFAULT_FAILURE_CODES",
    "MAX_SHARED_TARGETS",
    "BreakerSettings",
    "ChannelBreaker",
    "ChannelBreakers",
]

_C = grpc.StatusCode

#: Codes that count as a failure by default (``breaker_failure`` in
#: ``octollm_grpc.codes.CODE_BEHAVIOUR``); client errors such as INVALID_ARGUMENT never do.
DEFAULT_FAILURE_CODES = BREAKER_FAILURES


@dataclass(frozen=True, slots=True)
class BreakerSettings(BreakerLimits):
    """When a channel's breaker opens, how long it stays open, and how it probes (seconds).

    It opens after ``failure_threshold`` consecutive failures, or (when
    ``failure_rate_threshold`` is set) when at least ``minimum_calls`` of the last
    ``window_size`` calls were recorded and the failed fraction reaches the threshold; set
    ``failure_threshold=None`` to use the rate alone. Each consecutive trip multiplies the
    open time by ``reset_timeout_multiplier``, up to ``max_reset_timeout``. A half-open
    breaker lets ``half_open_probes`` calls through; a probe that has not reported after
    ``probe_timeout`` frees its permit.

    Args:
        failure_threshold: Consecutive failures that open the breaker (``None``: rate only).
        failure_rate_threshold: Failed fraction of the window that opens it, in (0, 1].
        window_size: Calls in the sliding window.
        minimum_calls: Calls recorded before the rate is judged.
        reset_timeout: Seconds open before the first probe.
        reset_timeout_multiplier: Growth of the open time per consecutive trip (>= 1).
        max_reset_timeout: The longest open time.
        half_open_probes: Calls admitted at a time while half-open.
        probe_timeout: Seconds after which an unreported probe frees its permit.
        failure_codes: Status codes (or their names or numbers) that count as failures.
        per_method: One breaker per method instead of one per target.

    Raises:
        TypeError: A value of the wrong type.
        ValueError: A value out of range, neither threshold set, or ``OK`` in ``failure_codes``.
    """

    failure_codes: frozenset[grpc.StatusCode] = DEFAULT_FAILURE_CODES
    per_method: bool = False
    """One breaker per method instead of one per target."""

    def __post_init__(self) -> None:
        BreakerLimits.__post_init__(self)
        codes = status_codes(self.failure_codes, "failure_codes")
        if _C.OK in codes:
            raise ValueError("failure_codes may not contain OK")
        object.__setattr__(self, "failure_codes", codes)


# Built once: BreakerSettings() validates its codes, which costs more than a lookup.
_DEFAULT_SETTINGS = BreakerSettings()


class ChannelBreaker(BreakerCore):
    """One target's (or one method's) breaker on a resilient channel.

    Args:
        target: The target it guards (the metrics' ``target`` label).
        settings: Its [`BreakerSettings`][octollm_grpc.client.BreakerSettings] (default:
            ``BreakerSettings()``).
        method: The method it guards when per method, else ``""``.
        clock: Monotonic seconds (injectable for tests).
        registry: The Prometheus registry for its metrics (default: the global one).
        listeners: Called as ``listener(breaker, old_state, new_state)`` after each change.

    Raises:
        CircuitOpenError: From `acquire`, while open (with ``retry_after``).
    """

    settings: BreakerSettings

    def __init__(
        self,
        target: str,
        settings: BreakerSettings | None = None,
        *,
        method: str = "",
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
        listeners: Iterable[BreakerListener] = (),
    ) -> None:
        super().__init__(target, settings or _DEFAULT_SETTINGS, open_error=self._rejection,
                         method=method, clock=clock, registry=registry, listeners=listeners)

    def _rejection(self, target: str, retry_after: float) -> BaseException:
        error = CircuitOpenError(target, retry_after)
        if self.method:
            error.details["method"] = self.method
        return error

    def record(self, token: int, code: grpc.StatusCode) -> None:
        """Report the call's outcome by status code: failure, no verdict or success.

        Args:
            token: What `acquire` returned for the call.
            code: The call's final status code.
        """
        if code is _C.OK:
            self.on_success(token)
        elif code in self.settings.failure_codes:
            self.on_failure(token)
        elif code is _C.CANCELLED:
            self.release(token)
        else:
            self.on_success(token)  # the server answered, if with an error of the caller's


#: How many targets' breaker groups ``ChannelBreakers.for_target`` keeps (LRU).
MAX_SHARED_TARGETS = 1024


class ChannelBreakers:
    """The breakers of one target: one for all methods, or one per method (``per_method``).

    `for_target` returns the group every channel to a target shares. The process keeps
    the groups of the ``MAX_SHARED_TARGETS`` most recently used targets: an older one is
    dropped (channels holding it keep using it, its metric series are removed, and the next
    channel to that target starts with a fresh, closed breaker).
    """

    _shared: ClassVar[OrderedDict[tuple[object, ...], ChannelBreakers]] = OrderedDict()
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        target: str,
        settings: BreakerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
        listeners: Iterable[BreakerListener] = (),
    ) -> None:
        self.target = target
        self.settings = settings or _DEFAULT_SETTINGS
        self._clock = clock
        self._registry = registry
        self._listeners = list(listeners)
        self._lock = threading.Lock()
        self._breakers: dict[str, ChannelBreaker] = {}

    @classmethod
    def for_target(
        cls,
        target: str,
        settings: BreakerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
    ) -> ChannelBreakers:
        """The process-wide group for ``target`` with these settings, clock and registry."""
        key = (target, settings or _DEFAULT_SETTINGS, clock, registry)
        evicted = None
        with cls._shared_lock:
            group = cls._shared.get(key)
            if group is None:
                group = cls._shared[key] = cls(target, settings, clock=clock, registry=registry)
                if len(cls._shared) > MAX_SHARED_TARGETS:
                    evicted = cls._shared.pop(next(iter(cls._shared)))  # least recently used
            else:
                cls._shared.move_to_end(key)
        if evicted is not None:
            evicted.forget()
        return group

    def forget(self) -> None:
        """Drop the metric series of this group's breakers (it is no longer shared)."""
        with self._lock:
            breakers = list(self._breakers.values())
        for breaker in breakers:
            breaker.forget()

    def for_method(self, method: str) -> ChannelBreaker:
        """The breaker guarding ``method`` (the target's only one unless ``per_method``)."""
        key = method if self.settings.per_method else ""
        breaker = self._breakers.get(key)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(key)
                if breaker is None:
                    breaker = self._breakers[key] = ChannelBreaker(
                        self.target, self.settings, method=key, clock=self._clock,
                        registry=self._registry, listeners=self._listeners)
        return breaker
