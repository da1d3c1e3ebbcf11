"""A discrete-event model of the brownout, to compare limiter designs in milliseconds of CPU.

``python -m benchmarks.brownout_model`` prints, for Gradient2 as Netflix publishes it (every
sample in a long exponential average, no move while fewer than half the limit are in flight)
and for our :class:`~octollm_grpc._core.gradient.GradientLimit`: goodput in the brownout /
the reduced capacity, the p99 of admitted calls / the unloaded p99, and refusals at half the
capacity. Deterministic (seeded); no gRPC, no real time. The model: calls arrive every
``1 / rate`` s; the server serves ``slots`` at a time (halved in the window), FIFO, each
taking ``service_s`` plus 1 ms plus exponential noise; the limiter admits while fewer than
``int(limit)`` are in flight and takes each admitted call's latency as a sample. The real
servers' figures are :mod:`benchmarks.brownout`'s.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from typing import Protocol

from octollm_grpc._core.gradient import GradientLimit


class Limit(Protocol):
    """What the model needs of a limiter."""

    limit: float

    def update(self, rtt: float, in_flight: int) -> float: ...


class Gradient2:
    """Netflix concurrency-limits' ``Gradient2Limit`` (defaults but ``queue_size``)."""

    def __init__(self, *, initial_limit: float, min_limit: float, max_limit: float,
                 queue_size: float = 4.0, tolerance: float = 1.5, smoothing: float = 0.2,
                 long_window: int = 600) -> None:
        self.limit = float(initial_limit)
        self._bounds = (min_limit, max_limit)
        self._queue, self._tolerance, self._smoothing = queue_size, tolerance, smoothing
        self._alpha = 2.0 / (long_window + 1)
        self._long = 0.0
        self._count = 0

    def update(self, rtt: float, in_flight: int) -> float:
        if self._count < 10:  # Netflix's warm-up: a plain average of the first 10
            self._count += 1
            self._long += (rtt - self._long) / self._count
        else:
            self._long += (rtt - self._long) * self._alpha
        if self._long / rtt > 2.0:
            self._long *= 0.95
        if in_flight < self.limit / 2.0:
            return self.limit
        gradient = max(0.5, min(1.0, self._tolerance * self._long / rtt))
        stepped = self.limit * gradient + self._queue
        stepped = self.limit * (1 - self._smoothing) + stepped * self._smoothing
        self.limit = max(self._bounds[0], min(self._bounds[1], stepped))
        return self.limit


def simulate(make: Callable[[], Limit], *, rate: float = 120.0, slots: int = 4,
             service_s: float = 0.02, before_s: float = 1.5, trigger_s: float = 4.0,
             after_s: float = 4.0, brownout: bool = True, noise_s: float = 0.001,
             seed: int = 1) -> dict[str, float]:
    """One run of the model; the figures as :mod:`benchmarks.brownout` defines them."""
    rnd = random.Random(seed)
    limiter = make()
    events: list[tuple[float, int, int]] = [
        (i / rate, 0, i) for i in range(int((before_s + trigger_s + after_s) * rate))]
    heapq.heapify(events)
    queue: list[int] = []
    busy = in_flight = 0
    started: dict[int, tuple[float, int]] = {}
    calls: list[tuple[float, float, bool]] = []  # start, end, refused
    window = (before_s, before_s + trigger_s)
    service_mean = service_s + 0.001 + noise_s
    while events:
        now, kind, index = heapq.heappop(events)
        if kind == 0:
            if in_flight >= int(limiter.limit):
                calls.append((now, now, True))
                continue
            in_flight += 1
            started[index] = (now, in_flight)
            queue.append(index)
        else:
            busy -= 1
            in_flight -= 1
            start, at_start = started.pop(index)
            calls.append((start, now, False))
            limiter.update(now - start, at_start)
        capacity = slots // 2 if brownout and window[0] <= now < window[1] else slots
        while queue and busy < capacity:
            busy += 1
            done = now + service_s + 0.001 + rnd.expovariate(1.0 / noise_s)
            heapq.heappush(events, (done, 1, queue.pop(0)))
    good = sum(1 for s, e, r in calls if not r and e - s <= 0.5 and window[0] <= e < window[1])
    admitted = [e - s for s, e, r in calls if not r and window[0] <= s < window[1]]
    unloaded = [e - s for s, e, r in calls if not r and s < window[0]]
    p99 = sorted(admitted)[int(0.99 * len(admitted))] if admitted else math.nan
    return {
        "goodput_ratio": good / trigger_s / ((slots // 2) / service_mean),
        "p99_ratio": p99 / sorted(unloaded)[int(0.99 * len(unloaded))],
        "refusals": float(sum(1 for _, _, r in calls if r)),
    }


def main() -> None:
    """Print the comparison (limits as the brownout benchmark sets them: 1, 64, 8)."""
    bounds = {"initial_limit": 8, "min_limit": 1, "max_limit": 64}
    designs: dict[str, Callable[[], Limit]] = {
        "Gradient2 (queue_size 4)": lambda: Gradient2(**bounds),
        "Gradient2 (queue_size 1)": lambda: Gradient2(queue_size=1.0, **bounds),
        "GradientLimit (ours)": lambda: GradientLimit(**bounds),
    }
    print("| design | goodput / reduced capacity | admitted p99 / unloaded p99 "
          "| refusals at half capacity |")
    print("|---|---|---|---|")
    for name, make in designs.items():
        storm = simulate(make)
        light = simulate(make, rate=100.0, brownout=False)
        print(f"| {name} | {storm['goodput_ratio']:.2f} | {storm['p99_ratio']:.2f} "
              f"| {light['refusals']:.0f} |")


if __name__ == "__main__":
    main()
