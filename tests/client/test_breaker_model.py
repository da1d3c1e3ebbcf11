"""Model-based test of the circuit breaker: random call sequences against a small reference model.

Hypothesis drives acquire / success / failure / release / clock steps on a real
:class:`ChannelBreaker` and on :class:`Model`, a plain restatement of the documented semantics
(a deque for the window, a dict for probes), and checks after every step that both agree on
the state, on every token handed out, on every rejection's ``retry_after`` and on the gauge.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc._core.breaker import HALF_OPEN_RETRY_AFTER
from octollm_grpc.client import BreakerSettings, ChannelBreaker, CircuitState
from octollm_grpc.testing import FakeClock

CLOSED, HALF_OPEN, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN


@dataclass(frozen=True)
class Token:
    """What the model expects a call to hold: a closed call's generation, or a probe's id."""

    probe: bool
    number: int

    def real(self) -> int:
        """The breaker's encoding: the epoch for a closed call, minus the id for a probe."""
        return -self.number if self.probe else self.number


class Model:
    """The breaker's semantics, stated as plainly as possible."""

    def __init__(self, s: BreakerSettings) -> None:
        self.s = s
        self.state = CLOSED
        self.generation = 0  # every transition starts a new one; older reports are ignored
        self.consecutive = 0
        self.window: deque[bool] = deque(maxlen=s.window_size)
        self.trips = 0
        self.open_until = 0.0
        self.probes: dict[int, float] = {}
        self.next_probe = 1
        self.successes = 0

    def view(self, now: float) -> CircuitState:
        return HALF_OPEN if self.state is OPEN and now >= self.open_until else self.state

    def move(self, new: CircuitState, now: float) -> None:
        self.state = new
        self.generation += 1
        self.probes = {}
        self.successes = 0
        if new is OPEN:
            self.trips += 1
            wait = self.s.reset_timeout * self.s.reset_timeout_multiplier ** (self.trips - 1)
            self.open_until = now + min(wait, self.s.max_reset_timeout)
        elif new is CLOSED:
            self.trips = 0
            self.consecutive = 0
            self.window.clear()

    def acquire(self, now: float) -> Token | float:
        """The token a call gets, or the ``retry_after`` of its rejection."""
        if self.state is OPEN and now >= self.open_until:
            self.move(HALF_OPEN, now)
        if self.state is CLOSED:
            return Token(False, self.generation)
        if self.state is OPEN:
            return self.open_until - now
        self.probes = {p: expiry for p, expiry in self.probes.items() if expiry > now}
        if len(self.probes) >= self.s.half_open_probes:
            return min(min(self.probes.values()) - now, HALF_OPEN_RETRY_AFTER)
        probe = self.next_probe
        self.next_probe += 1
        self.probes[probe] = now + self.s.probe_timeout
        return Token(True, probe)

    def trips_now(self) -> bool:
        s = self.s
        if s.failure_threshold is not None and self.consecutive >= s.failure_threshold:
            return True
        if s.failure_rate_threshold is None or len(self.window) < s.minimum_calls:
            return False
        return sum(self.window) / len(self.window) >= s.failure_rate_threshold

    def report(self, token: Token, failed: bool, now: float) -> None:
        if token.probe:
            if self.probes.pop(token.number, None) is None:
                return  # expired, released, or from an earlier half-open period
            if failed:
                self.move(OPEN, now)
            else:
                self.successes += 1
                if self.successes == self.s.half_open_probes:
                    self.move(CLOSED, now)
        elif token.number == self.generation and self.state is CLOSED:
            self.consecutive = self.consecutive + 1 if failed else 0
            if self.s.failure_rate_threshold is not None:
                self.window.append(failed)
            if failed and self.trips_now():
                self.move(OPEN, now)

    def release(self, token: Token) -> None:
        if token.probe:
            self.probes.pop(token.number, None)


@st.composite
def breaker_settings(draw: st.DrawFn) -> BreakerSettings:
    rate = draw(st.sampled_from([None, 0.25, 0.5, 1.0]))
    threshold = draw(st.sampled_from([1, 2, 3, 4] + ([None] if rate is not None else [])))
    window = draw(st.integers(1, 6))
    reset = draw(st.integers(1, 5))
    return BreakerSettings(
        failure_threshold=threshold, failure_rate_threshold=rate, window_size=window,
        minimum_calls=draw(st.integers(1, window)), reset_timeout=reset,
        reset_timeout_multiplier=draw(st.sampled_from([1, 2, 3])),
        max_reset_timeout=reset + draw(st.integers(0, 10)),
        half_open_probes=draw(st.integers(1, 3)), probe_timeout=draw(st.integers(1, 5)))


class BreakerAgainstModel(RuleBasedStateMachine):
    """Random sequences of calls, reports and time on a breaker and on the model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.outstanding: list[Token] = []

    @initialize(s=breaker_settings())
    def build(self, s: BreakerSettings) -> None:
        self.registry = CollectorRegistry()
        self.breaker = ChannelBreaker("model:1", s, clock=self.clock.now, registry=self.registry)
        self.model = Model(s)

    @rule()
    def acquire(self) -> None:
        expected = self.model.acquire(self.clock.now())
        if isinstance(expected, Token):
            assert self.breaker.acquire() == expected.real()
            self.outstanding.append(expected)
        else:
            with pytest.raises(errors.CircuitOpenError) as caught:
                self.breaker.acquire()
            assert caught.value.retry_after == pytest.approx(max(0.0, expected))

    @precondition(lambda self: self.outstanding)
    @rule(index=st.integers(0, 50), outcome=st.sampled_from(["success", "failure", "release"]))
    def report(self, index: int, outcome: str) -> None:
        token = self.outstanding.pop(index % len(self.outstanding))
        now = self.clock.now()
        if outcome == "release":
            self.model.release(token)
            self.breaker.release(token.real())
        elif outcome == "success":
            self.model.report(token, False, now)
            self.breaker.on_success(token.real())
        else:
            self.model.report(token, True, now)
            self.breaker.on_failure(token.real())

    @rule(seconds=st.sampled_from([0.5, 1, 2, 5, 12]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "model"):
            return
        assert self.breaker.state is self.model.view(self.clock.now())
        gauge = self.registry.get_sample_value(
            "octollm_client_circuit_state", {"target": "model:1", "method": ""})
        assert gauge == self.model.state.gauge


TestBreakerAgainstModel = BreakerAgainstModel.TestCase
TestBreakerAgainstModel.settings = settings(max_examples=100, stateful_step_count=30,
                                            deadline=None)
