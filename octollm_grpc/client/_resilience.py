"""The retry core both stacks share: per-method plans and the per-call retry decision.

Order per call: retry (this module, whole call, deadline-aware) -> retry budget -> circuit
breaker (per attempt) -> the attempt. The sync and aio interceptors only start attempts,
sleep and raise; every decision is made here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import grpc

from octollm_grpc._core.backoff import STOP, full_jitter, server_delay
from octollm_grpc._core.budget import RetryBudget
from octollm_grpc._core.log import get_logger
from octollm_grpc.client._breaker import ChannelBreaker, ChannelBreakers
from octollm_grpc.client._hedging import HedgingPolicies, HedgingPolicy
from octollm_grpc.client._policy import NEVER_RETRIED, RetryPolicies, RetryPolicy
from octollm_grpc.observability._client_metrics import ClientMethodMetrics, ClientMetrics
from octollm_grpc.observability._otel import retry_event

__all__ = [
    "ATTEMPTS_HEADER",
    "CallRetry",
    "MethodPlan",
    "Resilience",
    "ended_by_callers_deadline",
]

#: Sent on every attempt after the first, with the number of attempts before it (A6).
ATTEMPTS_HEADER = "grpc-previous-rpc-attempts"

_C = grpc.StatusCode
_log = get_logger("octollm_grpc.client.retry")


class MethodPlan:
    """What guards one method: its retry policy, breaker and the target's budget.

    ``metrics``, when set, counts the method's attempts, retries and throttled retries.
    ``hedging``, when set, makes the method's unary and response-stream calls hedged
    (`octollm_grpc.client._hedging`) instead of retried.
    """

    __slots__ = ("breaker", "budget", "hedging", "method", "metrics", "policy")

    def __init__(
        self,
        method: str,
        policy: RetryPolicy | None,
        breaker: ChannelBreaker | None,
        budget: RetryBudget | None,
        metrics: ClientMethodMetrics | None = None,
        hedging: HedgingPolicy | None = None,
    ) -> None:
        self.hedging = hedging
        self.method = method
        self.policy = policy
        self.breaker = breaker
        self.budget = budget
        self.metrics = metrics

    def acquire(self) -> int:
        """A breaker token for one attempt (raises ``CircuitOpenError`` when open)."""
        return self.breaker.acquire() if self.breaker is not None else 0

    def record(self, token: int, code: grpc.StatusCode, callers_deadline: bool) -> None:
        """Report a failed attempt to the breaker.

        ``callers_deadline``: the attempt ran out of the caller's own time (see
        `ended_by_callers_deadline`), no verdict on the target, so its permit is freed.
        """
        breaker = self.breaker
        if breaker is not None:
            if callers_deadline:
                breaker.release(token)
            else:
                breaker.record(token, code)

    def succeeded(self, token: int) -> None:
        """Record a successful attempt with the breaker, the budget and the metrics."""
        if self.breaker is not None:
            self.breaker.on_success(token)
        if self.budget is not None:
            self.budget.on_success()
        if self.metrics is not None:
            self.metrics.attempt_ok()

    def failed(self, code: grpc.StatusCode) -> None:
        """Count a failed attempt (the breaker's verdict is recorded by the caller)."""
        if self.metrics is not None:
            self.metrics.attempt(code)


#: grpc core and our clock time the caller's deadline separately: readings this close count
#: as "the deadline had passed".
_DEADLINE_SLACK = 0.01


def ended_by_callers_deadline(
    code: grpc.StatusCode, retry: CallRetry | None, deadline: float | None, now: float
) -> bool:
    """True when an attempt's ``DEADLINE_EXCEEDED`` is the caller's deadline running out.

    That says nothing about the target's health. It is the target's failure when the policy's
    per-attempt timeout cut the attempt (``retry.capped``), or when the server answered
    ``DEADLINE_EXCEEDED`` itself before the caller's deadline (``deadline`` is the caller's,
    on the channel's clock; ``None`` when the caller set none).
    """
    if code is not _C.DEADLINE_EXCEEDED or deadline is None:
        return False
    if retry is not None and retry.capped:
        return False
    return now + _DEADLINE_SLACK >= deadline


class Resilience:
    """One channel's resilience settings, shared by its sync or aio interceptors.

    Plans are built once per method and cached, so a call costs one dict lookup.
    """

    def __init__(
        self,
        *,
        retry: RetryPolicies | None,
        budget: RetryBudget | None,
        breakers: ChannelBreakers | ChannelBreaker | None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        metrics: ClientMetrics | None = None,
        hedging: HedgingPolicies | None = None,
    ) -> None:
        self.hedging = hedging
        self.metrics = metrics
        self.retry = retry
        self.budget = budget
        self.breakers = breakers
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self._plans: dict[str | bytes, MethodPlan] = {}

    def plan(self, method: str | bytes) -> MethodPlan:
        """The cached plan for a method name (``str`` on sync, ``bytes`` on aio)."""
        plan = self._plans.get(method)
        if plan is None:
            name = method.decode() if isinstance(method, bytes) else method
            policy = self.retry.policy_for(name) if self.retry is not None else None
            if isinstance(self.breakers, ChannelBreakers):
                breaker: ChannelBreaker | None = self.breakers.for_method(name)
            else:
                breaker = self.breakers
            plan = self._plans[method] = MethodPlan(
                name, policy, breaker, self.budget,
                self.metrics.method(name) if self.metrics is not None else None,
                self.hedging.policy_for(name) if self.hedging is not None else None)
        return plan


class CallRetry:
    """The retry state of one call, made when it first needs one (the success path skips it).

    ``timeout`` is the caller's, in seconds from ``start`` (a ``clock`` reading).
    """

    __slots__ = ("attempts", "capped", "core", "deadline", "plan", "retries_backoff")

    def __init__(self, core: Resilience, plan: MethodPlan, timeout: float | None,
                 start: float) -> None:
        self.core = core
        self.plan = plan
        self.deadline = None if timeout is None else start + timeout
        self.attempts = 1
        self.retries_backoff = 0  # retries since the last server pushback (the backoff exponent)
        self.capped = False  # whether the last attempt ran under the per-attempt timeout

    def attempt_timeout(self) -> float | None:
        """The timeout for the next attempt: what is left of the deadline, capped per attempt.

        Returns ``0.0`` or less when the deadline has passed (no attempt may start).
        """
        policy = self.plan.policy
        cap = policy.per_attempt_timeout if policy is not None else None
        if self.deadline is None:
            self.capped = cap is not None
            return cap
        remaining = self.deadline - self.core.clock()
        self.capped = cap is not None and cap < remaining
        return cap if cap is not None and self.capped else remaining

    def next_delay(self, code: grpc.StatusCode, trailing_metadata: Any) -> float | None:
        """After a failed attempt: seconds to wait before the next one, or ``None`` to stop.

        Takes a budget token for a retryable failure even when it then stops, as A6 does.
        """
        policy = self.plan.policy
        if policy is None or code in NEVER_RETRIED:
            return None
        retryable = code in policy.retryable_codes or (
            code is _C.DEADLINE_EXCEEDED and self.capped)
        pushback = None
        if retryable or code in policy.pushback_codes:
            pushback = server_delay(trailing_metadata)
            retryable = retryable or (pushback is not None and pushback != STOP)
        if not retryable:
            return None
        budget = self.plan.budget
        allowed = budget.on_failure() if budget is not None else True
        method = self.plan.method
        if pushback == STOP:
            _log.info("rpc_retry_stopped_by_server", method=method, attempt=self.attempts,
                      code=code.name)
            return None
        if pushback is not None and pushback > policy.max_pushback:
            _log.info("rpc_retry_pushback_too_long", method=method, attempt=self.attempts,
                      code=code.name, delay=pushback, max_pushback=policy.max_pushback)
            return None
        if self.attempts >= policy.max_attempts:
            return None
        if not allowed:
            _log.warning("rpc_retry_throttled", method=method, attempt=self.attempts,
                         code=code.name)
            if self.plan.metrics is not None:
                self.plan.metrics.throttled.inc()
            return None
        if pushback is None:
            self.retries_backoff += 1
            delay = full_jitter(policy, self.retries_backoff, self.core.rng)
        else:
            self.retries_backoff = 0  # A6: backoff restarts after the server's own delay
            delay = pushback
        if self.deadline is not None and self.core.clock() + delay >= self.deadline:
            _log.info("rpc_retry_abandoned_deadline", method=method, attempt=self.attempts,
                      code=code.name, delay=delay)
            return None
        self.attempts += 1
        _log.info("rpc_retry", method=method, attempt=self.attempts, code=code.name,
                  delay=delay, server_pushback=pushback is not None)
        if self.plan.metrics is not None:
            self.plan.metrics.retries.inc()
        retry_event(self.attempts, code, delay)
        return delay
