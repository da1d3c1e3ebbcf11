"""The circuit breaker's state machine, shared by the gRPC client and the resilience helpers.

It imports no grpc: callers report a verdict per call (success, failure, no verdict) and say
which exception an open breaker raises. Closed: calls go through; failures are counted,
consecutively or over a sliding window of the last calls. Open: calls fail at once with the
caller's ``open_error`` (the typed ``CircuitOpenError``), nothing is sent. Half-open, after the
reset timeout: exactly ``half_open_probes`` calls may be in flight at a time; ``half_open_probes``
successful probes close the breaker, one failed probe opens it again (for longer, when the
reset timeout grows).

Operators can ``reset()`` a breaker (closed, counters cleared) or
``force_open()`` it (open now, for a given time); each logs an event
(``circuit_breaker_reset``, ``circuit_breaker_forced_open``) and counts
``octollm_client_circuit_operations_total{operation}``.

Listeners: a plain callable hears state changes, ``listener(breaker, old, new)``. An object with
any of the methods ``state_change(breaker, old, new)``, ``success(breaker)`` and
``failure(breaker)`` (pybreaker's names) hears what it defines: every call reported a success
or a failure, and the state changes (a change a call causes is heard before that call's
verdict). A listener that raises is logged and ignored.

A call holds an integer *token* from `BreakerCore.acquire` and reports it once
(``on_success``, ``on_failure`` or ``release`` for "no verdict", e.g. cancelled). The lock is
held only to update counters, never while a call runs, so the breaker is safe to share by
threads and asyncio tasks. A probe that never reports frees its permit after ``probe_timeout``.
"""

from __future__ import annotations

import enum
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from octollm_grpc._core.breaker_metrics import BreakerMetrics
from octollm_grpc._core.log import get_logger

__all__ = [
    "HALF_OPEN_RETRY_AFTER",
    "BreakerCore",
    "BreakerLimits",
    "BreakerListener",
    "CircuitState",
    "OpenError",
]

_log = get_logger("octollm_grpc.client.breaker")


#: What a call rejected in half-open (all probe permits taken) is told to wait, at most.
HALF_OPEN_RETRY_AFTER = 1.0


class CircuitState(enum.Enum):
    """A breaker's state; ``value`` is the standard's name for it, `gauge` its metric number.

    One enum for the gRPC client's breakers (``octollm_grpc.client.ChannelBreaker``) and
    [`octollm_grpc.resilience`][octollm_grpc.resilience]'s.
    """

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def gauge(self) -> int:
        """The number ``octollm_client_circuit_state`` reports: 0 closed, 1 half-open, 2 open."""
        return _GAUGE[self]


_GAUGE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


def _check(name: str, value: float, *, low: float = 0.0, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, not {value!r}")
    if not (math.isfinite(value) and value > low):
        raise ValueError(f"{name} must be > {low:g}, not {value!r}")


@dataclass(frozen=True, slots=True)
class BreakerLimits:
    """When a breaker opens, how long it stays open, and how it probes. Times in seconds.

    It opens after ``failure_threshold`` consecutive failures, or (when
    ``failure_rate_threshold`` is set) when at least ``minimum_calls`` of the last
    ``window_size`` calls were recorded and the failed fraction reaches the threshold; set
    ``failure_threshold=None`` to use the rate alone. Each consecutive trip multiplies the
    open time by ``reset_timeout_multiplier``, up to ``max_reset_timeout``.
    """

    failure_threshold: int | None = 5
    failure_rate_threshold: float | None = None
    window_size: int = 20
    minimum_calls: int = 10
    reset_timeout: float = 30.0
    reset_timeout_multiplier: float = 1.0
    max_reset_timeout: float = 300.0
    half_open_probes: int = 1
    probe_timeout: float = 30.0
    """A probe that has not reported after this long frees its permit."""

    def __post_init__(self) -> None:
        if self.failure_threshold is None and self.failure_rate_threshold is None:
            raise ValueError("set failure_threshold, failure_rate_threshold or both")
        if self.failure_threshold is not None:
            _check("failure_threshold", self.failure_threshold, integer=True)
        if self.failure_rate_threshold is not None:
            _check("failure_rate_threshold", self.failure_rate_threshold)
            if self.failure_rate_threshold > 1:
                raise ValueError("failure_rate_threshold is a fraction in (0, 1]")
        _check("window_size", self.window_size, integer=True)
        _check("minimum_calls", self.minimum_calls, integer=True)
        if self.minimum_calls > self.window_size:
            raise ValueError("minimum_calls must not exceed window_size")
        _check("reset_timeout", self.reset_timeout)
        _check("reset_timeout_multiplier", self.reset_timeout_multiplier)
        if self.reset_timeout_multiplier < 1:
            raise ValueError("reset_timeout_multiplier must be >= 1 (the open time never shrinks)")
        _check("max_reset_timeout", self.max_reset_timeout)
        if self.max_reset_timeout < self.reset_timeout:
            raise ValueError("max_reset_timeout must be >= reset_timeout")
        _check("half_open_probes", self.half_open_probes, integer=True)
        _check("probe_timeout", self.probe_timeout)


#: Called after each state change as ``listener(breaker, old_state, new_state)``; or an object
#: with ``state_change`` / ``success`` / ``failure`` methods (see the module docstring).
BreakerListener = Callable[["BreakerCore", CircuitState, CircuitState], None] | object

#: Builds the exception an open breaker raises: ``open_error(target, retry_after)``.
OpenError = Callable[[str, float], BaseException]


class BreakerCore:
    """One breaker (see the module docstring). ``clock`` must be monotonic, in seconds."""

    def __init__(
        self,
        target: str,
        settings: BreakerLimits,
        *,
        open_error: OpenError,
        method: str = "",
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
        listeners: Iterable[BreakerListener] = (),
    ) -> None:
        self.target = target
        self.method = method
        self.settings = settings
        self._open_error = open_error
        self._clock = clock
        self._listeners: list[Callable[[BreakerCore, CircuitState, CircuitState], None]] = []
        self._on_success: list[Callable[[BreakerCore], None]] = []
        self._on_failure: list[Callable[[BreakerCore], None]] = []
        for listener in listeners:
            self.add_listener(listener)
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._epoch = 0  # bumped on every transition: late reports of older calls are ignored
        self._consecutive = 0
        self._windowed = self.settings.failure_rate_threshold is not None
        self._window: list[bool] = []
        self._window_next = 0
        self._window_failures = 0
        self._trips = 0
        self._open_until = 0.0
        self._probe_ids = itertools.count(1)
        self._probes: dict[int, float] = {}  # probe id -> expiry
        self._probe_successes = 0
        metrics = BreakerMetrics.for_registry(registry)
        self._state_gauge = metrics.state.labels(target, method)
        self._rejected = metrics.rejected.labels(target, method)
        self._transitions = metrics.transitions
        self._metrics = metrics
        # The labelled series this breaker created beyond state and rejected (for forget()).
        self._series: set[tuple[str, ...]] = set()
        self._state_gauge.set(CircuitState.CLOSED.gauge)

    # -- reading --------------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The state now (an open breaker whose timeout has passed reports HALF_OPEN)."""
        if self._state is CircuitState.OPEN and self._clock() >= self._open_until:
            return CircuitState.HALF_OPEN
        return self._state

    def add_listener(self, listener: BreakerListener) -> None:
        """Add a listener, called outside the lock (see the module docstring for the kinds).

        Args:
            listener: ``listener(breaker, old, new)``, or an object with any of
                ``state_change(breaker, old, new)``, ``success(breaker)``, ``failure(breaker)``.

        Raises:
            TypeError: ``listener`` is neither callable nor has any of those methods.
        """
        hooks = [getattr(listener, name, None) for name in ("state_change", "success", "failure")]
        if not any(callable(hook) for hook in hooks):
            if not callable(listener):
                raise TypeError(f"a breaker listener must be callable or have state_change, "
                                f"success or failure methods, not {listener!r}")
            self._listeners.append(listener)
            return
        state_change, success, failure = hooks
        if callable(state_change):
            self._listeners.append(state_change)
        if callable(success):
            self._on_success.append(success)
        if callable(failure):
            self._on_failure.append(failure)

    # -- operating it ---------------------------------------------------------------------

    def reset(self) -> None:
        """Close the breaker now and forget its failures (an operator's "the backend is back").

        Logs ``circuit_breaker_reset`` (info) and counts
        ``octollm_client_circuit_operations_total{operation="reset"}``; a state change is
        announced as usual.
        """
        with self._lock:
            changed = self._move(CircuitState.CLOSED)
        self._operated("reset", "circuit_breaker_reset", changed)

    def force_open(self, open_for: float | None = None) -> None:
        """Open the breaker now: calls fail fast until ``open_for`` seconds have passed.

        Args:
            open_for: Seconds open before probing resumes (default: the open time the next
                trip would get). ``math.inf`` keeps it open until ``reset()``.

        Raises:
            ValueError: ``open_for`` is not a number > 0.
        """
        if open_for is not None and (isinstance(open_for, bool)
                                     or not isinstance(open_for, (int, float))
                                     or not open_for > 0):
            raise ValueError(f"open_for must be a number of seconds > 0, not {open_for!r}")
        with self._lock:
            changed = self._move(CircuitState.OPEN)
            if open_for is not None:
                self._open_until = self._clock() + open_for
                changed = (changed[0], changed[1], float(open_for))
        self._operated("force_open", "circuit_breaker_forced_open", changed)

    def _operated(self, operation: str, event: str,
                  changed: tuple[CircuitState, CircuitState, float]) -> None:
        self._series.add((operation,))
        self._metrics.operations.labels(self.target, self.method, operation).inc()
        old, new, open_for = changed
        (_log.warning if new is CircuitState.OPEN else _log.info)(
            event, target=self.target, method=self.method, from_state=old.name.lower(),
            **({"open_for": open_for} if new is CircuitState.OPEN else {}))
        self._announce(changed if old is not new else None)

    def forget(self) -> None:
        """Drop this breaker's labelled series from the metrics (it is no longer tracked).

        A registry that evicts a breaker calls it, so a process talking to many targets over
        time keeps a bounded number of series. The breaker still works; its state is simply
        no longer exported.
        """
        metrics = self._metrics
        metrics.state.remove(self.target, self.method)
        metrics.rejected.remove(self.target, self.method)
        for series in list(self._series):
            if len(series) == 2:
                metrics.transitions.remove(self.target, self.method, *series)
            else:
                metrics.operations.remove(self.target, self.method, *series)

    # -- the call protocol ----------------------------------------------------------------

    def acquire(self) -> int:
        """Admit a call and return its token, or raise ``open_error(target, retry_after)``."""
        epoch = self._epoch
        if self._state is CircuitState.CLOSED:
            # Lock-free fast path; a call admitted as the breaker trips reports a stale epoch.
            return epoch
        changed = None
        rejected = False
        retry_after = 0.0
        token = 0
        with self._lock:
            now = self._clock()
            if self._state is CircuitState.OPEN and now >= self._open_until:
                changed = self._move(CircuitState.HALF_OPEN)
            state: CircuitState = self._state
            if state is CircuitState.CLOSED:
                token = self._epoch
            elif state is CircuitState.HALF_OPEN:
                for probe, expiry in list(self._probes.items()):
                    if expiry <= now:
                        del self._probes[probe]  # a probe that never reported
                if len(self._probes) < self.settings.half_open_probes:
                    probe = next(self._probe_ids)
                    self._probes[probe] = now + self.settings.probe_timeout
                    token = -probe
                else:
                    rejected = True
                    # The probe in flight usually reports well before its permit expires.
                    retry_after = min(min(self._probes.values()) - now, HALF_OPEN_RETRY_AFTER)
            else:
                rejected = True
                retry_after = self._open_until - now
        self._announce(changed)
        if rejected:
            self._rejected.inc()
            raise self._open_error(self.target, max(0.0, retry_after))
        return token

    def on_success(self, token: int) -> None:
        """The call admitted with ``token`` succeeded (the server answered normally)."""
        if token >= 0 and self._consecutive == 0 and not self._windowed:
            if self._on_success:
                self._tell(self._on_success)
            return  # the common case, lock-free: a success in a healthy closed breaker
        changed = None
        with self._lock:
            if token >= 0:
                if token == self._epoch and self._state is CircuitState.CLOSED:
                    self._consecutive = 0
                    if self._windowed:
                        self._remember(False)
            elif self._probes.pop(-token, None) is not None:
                self._probe_successes += 1
                if self._probe_successes >= self.settings.half_open_probes:
                    changed = self._move(CircuitState.CLOSED)
        self._announce(changed)
        if self._on_success:
            self._tell(self._on_success)

    def on_failure(self, token: int) -> None:
        """The call admitted with ``token`` failed in a way that counts against the server."""
        changed = None
        with self._lock:
            if token >= 0:
                if token == self._epoch and self._state is CircuitState.CLOSED:
                    self._consecutive += 1
                    if self._windowed:
                        self._remember(True)
                    if self._should_trip():
                        changed = self._move(CircuitState.OPEN)
            elif self._probes.pop(-token, None) is not None:
                changed = self._move(CircuitState.OPEN)
        self._announce(changed)
        if self._on_failure:
            self._tell(self._on_failure)

    def release(self, token: int) -> None:
        """The call gives no verdict (cancelled by its caller): free a probe permit."""
        if token < 0:
            with self._lock:
                self._probes.pop(-token, None)

    # -- internals (called with the lock held) ----------------------------------------------

    def _remember(self, failed: bool) -> None:
        size = self.settings.window_size
        if len(self._window) < size:
            self._window.append(failed)
        else:
            self._window_failures -= self._window[self._window_next]
            self._window[self._window_next] = failed
            self._window_next = (self._window_next + 1) % size
        self._window_failures += failed

    def _should_trip(self) -> bool:
        settings = self.settings
        threshold = settings.failure_threshold
        if threshold is not None and self._consecutive >= threshold:
            return True
        if settings.failure_rate_threshold is None:
            return False
        calls = len(self._window)
        return (calls >= settings.minimum_calls
                and self._window_failures / calls >= settings.failure_rate_threshold)

    def _move(self, new: CircuitState) -> tuple[CircuitState, CircuitState, float]:
        old = self._state
        self._state = new
        self._epoch += 1
        self._probes.clear()
        self._probe_successes = 0
        open_for = 0.0
        if new is CircuitState.OPEN:
            settings = self.settings
            self._trips += 1
            open_for = min(settings.reset_timeout
                           * settings.reset_timeout_multiplier ** (self._trips - 1),
                           settings.max_reset_timeout)
            self._open_until = self._clock() + open_for
        elif new is CircuitState.CLOSED:
            self._trips = 0
            self._consecutive = 0
            self._window.clear()
            self._window_next = 0
            self._window_failures = 0
        return old, new, open_for

    def _announce(self, change: tuple[CircuitState, CircuitState, float] | None) -> None:
        if change is None:
            return
        old, new, open_for = change
        self._state_gauge.set(new.gauge)
        self._series.add((old.name.lower(), new.name.lower()))
        self._transitions.labels(self.target, self.method, old.name.lower(),
                                 new.name.lower()).inc()
        log = _log.warning if new is CircuitState.OPEN else _log.info
        log("circuit_breaker_state_changed", target=self.target, method=self.method,
            from_state=old.name.lower(), to_state=new.name.lower(),
            **({"open_for": open_for} if new is CircuitState.OPEN else {}))
        for listener in self._listeners:
            try:
                listener(self, old, new)
            except Exception:  # noqa: BLE001 - a broken listener must not break calls
                _log.exception("circuit_breaker_listener_failed", target=self.target)

    def _tell(self, hooks: list[Callable[[BreakerCore], None]]) -> None:
        for hook in hooks:
            try:
                hook(self)
            except Exception:  # noqa: BLE001 - a broken listener must not break calls
                _log.exception("circuit_breaker_listener_failed", target=self.target)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(target={self.target!r}, method={self.method!r}, "
                f"state={self.state.name})")
