"""How long and how often each part runs: the full suite and the smoke run."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.hedging import HedgingBenchConfig


@dataclass(frozen=True)
class StormConfig:
    """The retry-storm scenario, scaled down from a 30 s incident.

    Offered load is ``rate`` calls/s from ``callers`` clients (one channel each); the server
    admits ``slots`` calls at a time, each taking ``service_s`` (capacity = slots / service_s),
    queues ``queue`` more and rejects the rest with ``UNAVAILABLE``. The rates are kept low
    (tens of ms of work per call, not CPU) so that the storm's dynamics, not the CPU of a small
    shared machine, decide the outcome. The trigger lasts ``trigger_s`` after
    ``before_s`` of normal load; ``after_s`` follows it.
    """

    rate: float = 120.0
    callers: int = 8
    slots: int = 4
    queue: int = 96
    service_s: float = 0.02
    before_s: float = 1.5
    trigger_s: float = 4.0
    after_s: float = 4.0
    bin_s: float = 0.25
    #: Retry delays are the seed's, scaled by the same factor as the incident (30 s -> trigger_s).
    incident_s: float = 30.0
    max_attempts: int = 4
    breaker_reset_s: float = 1.0
    #: Each attempt's deadline (25 times the normal latency); a call's deadline for our stack.
    attempt_timeout_s: float = 0.5
    call_timeout_s: float = 2.0
    #: A bin counts as recovered when at least this share of the calls started in it succeeded
    #: (with ~30 calls a bin, 0.9 lets a stray timeout on a busy machine pass).
    recovered_share: float = 0.9

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.callers <= 0 or self.slots <= 0 or self.service_s <= 0:
            raise ValueError("rate, callers, slots and service_s must be positive")
        if self.queue < 0:
            raise ValueError("queue must be >= 0")
        if min(self.before_s, self.trigger_s, self.after_s, self.bin_s) <= 0:
            raise ValueError("phase lengths and bin_s must be positive")
        if self.max_attempts < 1:
            raise ValueError("max_attempts counts the first attempt: at least 1")

    @property
    def scale(self) -> float:
        """Time scale of the run relative to the real incident."""
        return self.trigger_s / self.incident_s

    @property
    def capacity(self) -> float:
        """Calls per second the server can serve."""
        return self.slots / self.service_s


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run: windows, repetitions and the storm."""

    name: str
    window_s: float
    warmup_s: float
    reps: int
    concurrencies: tuple[int, ...]
    codec_repeat: int
    codec_number: int
    storm: StormConfig
    storm_modes: tuple[str, ...]
    hedging: HedgingBenchConfig = field(default_factory=HedgingBenchConfig)
    #: Instruction counts (callgrind): counted calls per path, uncounted warm-up calls before
    #: them, and how many back-to-back runs (the second shows the counts repeat); 0 runs: none.
    ir_calls: int = 200
    ir_warmup: int = 100
    ir_runs: int = 2

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.warmup_s < 0 or self.reps < 1:
            raise ValueError("window_s must be positive, warmup_s >= 0, reps >= 1")


FULL = BenchConfig(
    name="full",
    # Many short windows: each pair of variants runs close together in time, so drifts of a
    # shared machine cancel in the ratio, and the median of 12 ratios shrugs off bad ones
    # (with 8, medians of runs minutes apart differed by up to 0.08 on this 2-core machine).
    window_s=0.3,
    warmup_s=0.3,
    reps=12,
    concurrencies=(1, 32),
    codec_repeat=7,
    codec_number=2000,
    storm=StormConfig(),
    storm_modes=("outage", "brownout"),
    ir_calls=200,
    ir_warmup=100,
    ir_runs=2,
)

SMOKE = BenchConfig(
    name="smoke",
    window_s=0.05,
    warmup_s=0.01,
    reps=2,
    concurrencies=(1, 32),
    codec_repeat=2,
    codec_number=50,
    storm=StormConfig(callers=4, before_s=0.2, trigger_s=0.5, after_s=0.5, bin_s=0.1,
                      breaker_reset_s=0.2),
    storm_modes=("outage", "brownout"),
    hedging=HedgingBenchConfig(calls=200, warmup_calls=20, outage_calls=60),
    # A valgrind'ed server takes ~20 s to start: far beyond a smoke run's seconds.
    ir_runs=0,
)
