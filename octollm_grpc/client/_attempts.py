"""The attempt loop both stacks share: one core decides each attempt of one call.

Per attempt it admits (a breaker permit), sets the per-attempt deadline, classifies the
outcome for the breaker, the budget and the metrics, and picks pushback or backoff
(`CallRetry`). The stacks keep only how they call and how
they wait: `octollm_grpc.client._sync_calls` blocks or schedules,
`octollm_grpc.client._aio_calls` awaits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import grpc

from octollm_grpc.client._replay import AsyncReplay, Replay
from octollm_grpc.client._resilience import (
    CallRetry,
    MethodPlan,
    Resilience,
    ended_by_callers_deadline,
)
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._budget import spent_callers_budget

__all__ = ["AttemptDetails", "CallAttempts", "capped_from_start"]


class AttemptDetails(Protocol):
    """What the core reads of a call's details (``grpc.ClientCallDetails`` on either stack)."""

    @property
    def method(self) -> str | bytes: ...

    @property
    def timeout(self) -> float | None: ...


DetailsT = TypeVar("DetailsT", bound=AttemptDetails)
SleepT = TypeVar("SleepT")

#: Makes one attempt's details from the caller's: ``(caller's, timeout, previous attempts)``.
WithTimeout = Callable[[Any, "float | None", int], Any]


def capped_from_start(plan: MethodPlan) -> bool:
    """Whether the method's first attempt already runs under a per-attempt timeout.

    Such a call needs its retry state from the start; any other call makes it on its first
    failure, so a call that succeeds at once allocates nothing of ours.
    """
    policy = plan.policy
    return policy is not None and policy.per_attempt_timeout is not None


def straight_entry(core: Resilience, method: Any) -> tuple[MethodPlan, Any] | None:
    """The straight path of ``method``'s unary calls (both stacks' single interceptor): its
    plan and call metrics, or ``None`` when its calls take the general path (hedged, or
    capped per attempt from the start)."""
    metrics = core.metrics
    # The call metrics first: a method's first call names its grpc_type.
    method_metrics = metrics.method(method, "unary") if metrics is not None else None
    plan = core.plan(method)
    if plan.hedging is not None or capped_from_start(plan):
        return None
    return plan, method_metrics


@dataclass(eq=False, kw_only=True, slots=True)
class CallAttempts(Generic[DetailsT, SleepT]):
    """One call's attempts: the caller's details and request, the plan, the retry state.

    ``retryable``: whether a failed attempt may be sent again (a request stream only when it
    is replayable). ``started``: the call's start on ``core.clock`` when the caller has it
    (read now otherwise, when the call has a timeout). ``token`` is the current attempt's
    breaker permit.
    """

    core: Resilience
    plan: MethodPlan
    details: DetailsT
    continuation: Any
    request: Any
    replay: Replay | AsyncReplay | None = None
    retryable: bool
    sleep: SleepT
    with_timeout: WithTimeout
    started: InitVar[float | None] = None
    token: int = 0
    start: float = field(init=False)
    retry: CallRetry | None = field(default=None, init=False)

    def __post_init__(self, started: float | None) -> None:
        if started is None:
            started = self.core.clock() if self.details.timeout is not None else 0.0
        self.start = started

    def requests(self) -> Any:
        """What to send on an attempt: the replayed stream from its start, or the request."""
        return self.replay.fresh() if self.replay is not None else self.request

    def first(self) -> Any:
        """The first attempt's details, its breaker permit taken.

        Raises ``CircuitOpenError`` when the breaker is open. A retryable call whose policy
        caps each attempt sends the first one under that cap.
        """
        details: Any = self.details
        if self.retryable and capped_from_start(self.plan):
            retry = self.retry = CallRetry(self.core, self.plan, details.timeout, self.start)
            details = self.with_timeout(details, retry.attempt_timeout(), 0)
        self.token = self.plan.acquire()
        return details

    def delay(self, error: grpc.RpcError, cancelled: bool = False) -> float:
        """Record a failed attempt; seconds to wait before the next one.

        Raises the typed error (``from_rpc_error``) instead when the call gives up: cancelled
        by its caller, not retryable, or the retry core says stop.
        """
        plan = self.plan
        code: grpc.StatusCode = error.code()
        if plan.breaker is not None:
            timeout = self.details.timeout
            deadline = None if timeout is None else self.start + timeout
            # The caller's own time ran out (its deadline here, or its budget as the server
            # says): no verdict on the target.
            plan.record(self.token, code, ended_by_callers_deadline(
                code, self.retry, deadline, self.core.clock())
                or spent_callers_budget(code, error.trailing_metadata()))
        plan.failed(code)
        if cancelled or not self.retryable:
            raise from_rpc_error(error) from error
        if self.retry is None:
            self.retry = CallRetry(self.core, plan, self.details.timeout, self.start)
        delay = self.retry.next_delay(code, error.trailing_metadata())
        if delay is None:
            raise from_rpc_error(error) from error
        return delay

    def next(self, error: grpc.RpcError) -> Any:
        """After the wait: the next attempt's details, its breaker permit taken.

        Raises the typed error for ``error`` (the last failure) when the deadline has passed
        meanwhile, and ``CircuitOpenError`` when the breaker has opened.
        """
        retry = self.retry
        assert retry is not None  # delay() made it
        timeout = retry.attempt_timeout()
        if timeout is not None and timeout <= 0:
            raise from_rpc_error(error) from error
        self.token = self.plan.acquire()
        return self.with_timeout(self.details, timeout, retry.attempts - 1)

    def succeeded(self) -> None:
        """Record the current attempt's success with the breaker, the budget and the metrics."""
        self.plan.succeeded(self.token)

    def release(self) -> None:
        """Free the current attempt's breaker permit without a verdict (cancelled, or never
        started, or failed with something that is not a status)."""
        breaker = self.plan.breaker
        if breaker is not None:
            breaker.release(self.token)
