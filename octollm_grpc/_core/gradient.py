"""The adaptive concurrency limit's algorithm: a gradient limiter after Netflix's Gradient2.

Pure: no gRPC, no clock, no locks. `GradientLimit` is fed one latency sample per
finished call (with the calls in flight when it started) and answers the new limit; the
server's [`ConcurrencyLimit`][octollm_grpc.server.ConcurrencyLimit] owns the locking, the clock and
the
refusals.

A server's latency stays flat until calls start to queue, then grows with the queue. The
limiter compares each sample with the server's no-load latency (the *baseline*) and moves the
limit by the gradient ``g = clamp(tolerance * baseline / sample, 0.5, 1)``: within
``tolerance`` times the baseline, ``g`` is 1 and the limit grows by ``queue_size``; beyond it,
the limit shrinks in proportion. Each step is smoothed (Gradient2's rule)::

    limit = limit * (1 - smoothing) + (limit * g + queue_size) * smoothing

so one step moves it by at most ``smoothing / 2`` of itself, and an outlier costs little. At
the equilibrium under overload, admitted calls see about ``tolerance / (1 - queue_size /
limit)`` times the baseline latency.

Where this departs from Gradient2, and why (docs/server.md has the measurements):

- The baseline is the average of the samples within tolerance of it (about the last
  ``window`` of them), never below the minimum of the last one to two windows. Gradient2
  averages every sample over a long window, which absorbs the queueing delay the limit itself
  admits: under a long overload its limit creeps up and latency with it (in a discrete-event
  model of the storm benchmark's brownout, ``python -m benchmarks.brownout_model``: p99 of
  admitted calls 4.1x the unloaded p99 with Gradient2 and a queue_size of 1, 2.5x with
  this). A baseline of the
  minimum alone (Envoy's, Netflix's Vegas) does not creep, but on a noisy server (a shared
  machine, GC pauses) ordinary latency is often 1.5x the minimum, and the limit shrank and
  refused calls with no queue at all. Averaging only the calls that did not queue gives
  neither: an overload cannot raise it, noise is part of it. A server that got slower for good
  (every sample beyond tolerance) lifts the windowed minimum above the old average within two
  windows, and the baseline follows.
- Gradient2 does not move the limit while fewer than half of it are in flight (no evidence
  about the capacity). Here the limit still shrinks when latency says so (queueing can start
  below half the limit), and while fewer than half are in flight with latency within
  tolerance it relaxes back toward ``initial_limit`` (never above it): a burst after a quiet
  spell finds the resting limit, not one lowered by an old outlier. It grows above
  ``initial_limit`` only with at least half of it in flight, as in Gradient2.
"""

from __future__ import annotations

import math

__all__ = ["GradientLimit"]


class GradientLimit:
    """A gradient concurrency limit; see the module docstring for the rule.

    Args:
        initial_limit: the limit before any sample, and the resting limit an idle server
            returns to.
        min_limit: the limit never goes below this.
        max_limit: nor above this.
        tolerance: how much slower than the baseline a sample may be before the limit shrinks
            (1.5: half as slow again).
        smoothing: the weight of each step's new limit (0 < smoothing <= 1).
        window: samples the baseline averages over (about), and per window of its floor
            (the minimum over the current and the previous window).
        queue_size: how much the limit grows per step when latency is within tolerance; also
            the queue it allows at the equilibrium.

    Raises:
        ValueError: for a bound or parameter out of range.
    """

    __slots__ = ("_average", "_count", "_current_min", "_previous_min", "_samples",
                 "initial_limit", "limit",
                 "max_limit", "min_limit", "queue_size", "smoothing", "tolerance", "window")

    def __init__(
        self,
        *,
        initial_limit: float,
        min_limit: float,
        max_limit: float,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        window: int = 300,
        queue_size: float = 1.0,
    ) -> None:
        if not 1 <= min_limit <= max_limit or not math.isfinite(max_limit):
            raise ValueError(f"need 1 <= min_limit <= max_limit, not {min_limit!r}, "
                             f"{max_limit!r}")
        if not min_limit <= initial_limit <= max_limit:
            raise ValueError(f"initial_limit {initial_limit!r} is outside "
                             f"[{min_limit!r}, {max_limit!r}]")
        if not 1.0 <= tolerance < math.inf:
            raise ValueError(f"tolerance must be a finite number >= 1, not {tolerance!r}")
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], not {smoothing!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, not {window!r}")
        if not 0.0 <= queue_size < math.inf:
            raise ValueError(f"queue_size must be a finite number >= 0, not {queue_size!r}")
        self.initial_limit = float(initial_limit)
        self.limit = float(initial_limit)
        self.min_limit = float(min_limit)
        self.max_limit = float(max_limit)
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.window = window
        self.queue_size = queue_size
        self._current_min = math.inf
        self._previous_min = math.inf
        self._count = 0
        self._average = 0.0
        self._samples = 1

    @property
    def baseline(self) -> float:
        """The no-load latency in seconds (0.0 before the first sample)."""
        return self._average

    def update(self, rtt: float, in_flight: int) -> float:
        """Take one latency sample.

        Args:
            rtt: the call's latency in seconds.
            in_flight: the calls in flight when it started (itself included).

        Returns:
            the new limit (admit while the calls in flight are fewer than ``int(limit)``).
        """
        # Plain comparisons, not min()/max(): this runs once per call (about 1 us less).
        if not 0.0 < rtt < math.inf:
            return self.limit  # a clock that did not move says nothing about latency
        current = self._current_min
        if rtt < current:
            self._current_min = current = rtt
        self._count += 1
        if self._count >= self.window:
            self._previous_min, self._current_min, self._count = current, math.inf, 0
        previous = self._previous_min
        floor = current if current < previous else previous
        average = self._average
        tolerance = self.tolerance
        if average == 0.0:
            average = rtt
        elif rtt <= tolerance * average:
            # Only calls that did not queue move the average: an overload cannot raise it.
            if self._samples < self.window:
                self._samples += 1
            average += (rtt - average) / self._samples
        if average < floor:
            # A server slower for good: its minimum rises above the old average within two
            # windows, and the average follows.
            average = floor
        self._average = average
        limit = self.limit
        gradient = tolerance * average / rtt
        smoothing = self.smoothing
        if gradient >= 1.0:
            stepped = limit + self.queue_size * smoothing
            if in_flight < limit / 2.0:
                # Not using the limit: no evidence to grow on; only relax back to the
                # resting one.
                ceiling = limit if limit > self.initial_limit else self.initial_limit
                if stepped > ceiling:
                    stepped = ceiling
        else:
            if gradient < 0.5:
                gradient = 0.5
            stepped = limit * (1.0 - smoothing) + (limit * gradient + self.queue_size) * smoothing
        if stepped > self.max_limit:
            stepped = self.max_limit
        elif stepped < self.min_limit:
            stepped = self.min_limit
        self.limit = stepped
        return stepped
