"""Hedged calls (gRFC A6 ``hedgingPolicy``): the policy and each call's decisions, no I/O.

A hedged method sends its first attempt at once and another one (a *hedge*) each
``hedging_delay`` while none has answered, up to ``max_attempts`` in all; a failure with one
of ``non_fatal_codes`` sends the next hedge at once. The first success wins and the other
attempts are cancelled; any other failure ends the call with it (and cancels the rest). The
stacks (`octollm_grpc.client._sync_hedging`, `octollm_grpc.client._aio_hedging`) only
start, time and cancel attempts; `HedgeRace` decides:

- a hedge is sent only while the target's retry budget allows a retry, and spends one token
  of it, so hedges add at most ``token_ratio`` attempts per successful call once the
  bucket's slack is used, even when attempts are slow rather than failing (a slowed-down
  server is not sent twice its load); a throttled call sends no more hedges;
- a non-fatal failure takes a token too, as A6 counts it (and as a failed attempt does for
  retries), so under an outage hedges drain the budget at least as fast as retries do;
- pushback from any attempt (``grpc-retry-pushback-ms`` or ``RetryInfo``, any value) stops
  further hedges: the server is shedding load, and a hedge that waits for it no longer cuts
  the tail (A6 would delay the next hedge by the pushback instead);
- every hedge runs within the caller's deadline (its timeout is what is left of it);
- the breaker sees one call: one permit for all attempts, one verdict at the end.

Only idempotent methods may be hedged: the server may run a call's handler several times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from octollm_grpc._core.backoff import server_delay
from octollm_grpc._core.budget import RetryBudget
from octollm_grpc._core.log import get_logger
from octollm_grpc.client._policy import NEVER_RETRIED, status_codes

if TYPE_CHECKING:
    import grpc

__all__ = ["MAX_HEDGED_ATTEMPTS", "HedgeRace", "HedgingPolicies", "HedgingPolicy"]

#: A6: a ``maxAttempts`` above this is treated as this.
MAX_HEDGED_ATTEMPTS = 5

_log = get_logger("octollm_grpc.client.hedging")


@dataclass(frozen=True, slots=True)
class HedgingPolicy:
    """How one method's calls are hedged (gRFC A6's ``hedgingPolicy``); times in seconds.

    ``max_attempts`` counts the first attempt: at least 2, and above
    `MAX_HEDGED_ATTEMPTS` it is that (as A6 says). ``hedging_delay`` is the wait before
    each next hedge (0: all attempts at once). ``non_fatal_codes`` do not end the call: the
    next hedge goes at once; every other failure ends it.

    Raises:
        TypeError: a field of the wrong type.
        ValueError: ``max_attempts`` below 2, a negative or infinite delay, ``OK`` or
            ``CANCELLED`` among the codes.
    """

    max_attempts: int = 2
    hedging_delay: float = 0.0
    non_fatal_codes: frozenset[grpc.StatusCode] = frozenset()

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, not {self.max_attempts!r}")
        if self.max_attempts < 2:
            raise ValueError("max_attempts counts the first attempt and a hedge needs a second:"
                             f" >= 2, not {self.max_attempts}")
        object.__setattr__(self, "max_attempts", min(self.max_attempts, MAX_HEDGED_ATTEMPTS))
        delay = self.hedging_delay
        if isinstance(delay, bool) or not isinstance(delay, (int, float)):
            raise TypeError(f"hedging_delay must be a number, not {delay!r}")
        if not (math.isfinite(delay) and delay >= 0):
            raise ValueError(f"hedging_delay must be a finite number >= 0, not {delay!r}")
        codes = status_codes(self.non_fatal_codes, "non_fatal_codes")
        bad = codes & NEVER_RETRIED
        if bad:
            raise ValueError(f"non_fatal_codes may not contain {sorted(c.name for c in bad)}")
        object.__setattr__(self, "non_fatal_codes", codes)


def _method_key(name: str) -> str:
    return name[1:] if name.startswith("/") else name


@dataclass(frozen=True, slots=True)
class HedgingPolicies:
    """Hedging policies by method, looked up as [`RetryPolicies`][octollm_grpc.client.RetryPolicies]
    are: exact method, then service, then ``default``.

    ``methods`` holds every name a config configured (``None``: not hedged), so a method entry
    without hedging hides its service's hedging, as a service config's lookup does.
    """

    default: HedgingPolicy | None = None
    methods: Mapping[str, HedgingPolicy | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cleaned: dict[str, HedgingPolicy | None] = {}
        for name, policy in self.methods.items():
            if policy is not None and not isinstance(policy, HedgingPolicy):
                raise TypeError(f"policy for {name!r} must be a HedgingPolicy or None")
            cleaned[_method_key(name)] = policy
        object.__setattr__(self, "methods", MappingProxyType(cleaned))

    def policy_for(self, method: str) -> HedgingPolicy | None:
        """The policy for a full method name (``"/pkg.Service/Method"``), or ``None``."""
        key = _method_key(method)
        if key in self.methods:
            return self.methods[key]
        service = key.rpartition("/")[0]
        if service in self.methods:
            return self.methods[service]
        return self.default


class _Counter(Protocol):
    def inc(self) -> None: ...


class HedgeCounters(Protocol):
    """The method's counters a race bumps (``ClientMethodMetrics`` has them)."""

    # Read-only: a class whose attributes are a narrower counter type still matches.
    @property
    def hedges(self) -> _Counter: ...

    @property
    def throttled(self) -> _Counter: ...


class HedgeRace:
    """The decisions of one hedged call. Not thread-safe: a sync runner holds a lock.

    ``timeout`` is the caller's (seconds from ``start``, a ``clock`` reading), ``None`` for
    no deadline.
    """

    __slots__ = ("budget", "clock", "deadline", "done", "in_flight", "method", "metrics",
                 "policy", "sent", "stopped")

    def __init__(self, policy: HedgingPolicy, *, method: str, budget: RetryBudget | None,
                 metrics: HedgeCounters | None, clock: Callable[[], float],
                 timeout: float | None, start: float) -> None:
        self.policy = policy
        self.method = method
        self.budget = budget
        self.metrics = metrics
        self.clock = clock
        self.deadline = None if timeout is None else start + timeout
        self.sent = 1  # the first attempt goes without asking
        self.in_flight = 1
        self.stopped = False  # pushback or the budget: no more hedges for this call
        self.done = False

    def attempt_timeout(self) -> float | None:
        """An attempt's timeout: what is left of the caller's deadline (``None``: none)."""
        return None if self.deadline is None else self.deadline - self.clock()

    def may_hedge(self) -> bool:
        """Whether a later hedge could still be sent (so a timer is worth setting)."""
        return not (self.done or self.stopped or self.sent >= self.policy.max_attempts)

    def take_hedge(self, reason: str) -> int | None:
        """Decide on sending a hedge now; its attempt number (attempts before it), or ``None``.

        ``reason`` (``"delay"`` or the non-fatal code's name) goes to the log. A hedge is
        refused once the call is over, ``max_attempts`` are sent, pushback arrived, the
        caller's deadline has passed, or the budget is at or below half (that stops the
        call's hedges). A hedge sent spends one budget token.
        """
        if not self.may_hedge():
            return None
        remaining = self.attempt_timeout()
        if remaining is not None and remaining <= 0:
            return None
        budget = self.budget
        if budget is not None:
            if not budget.allows_retry():
                self.stopped = True
                _log.warning("rpc_hedge_throttled", method=self.method, attempt=self.sent + 1)
                if self.metrics is not None:
                    self.metrics.throttled.inc()
                return None
            budget.on_failure()  # the hedge's token: what a retry would spend
        previous = self.sent
        self.sent += 1
        self.in_flight += 1
        _log.info("rpc_hedge", method=self.method, attempt=self.sent, reason=reason)
        if self.metrics is not None:
            self.metrics.hedges.inc()
        return previous

    def unsent(self) -> None:
        """A hedge `take_hedge` allowed could not start (its permit is not in flight)."""
        self.in_flight -= 1

    def failed(self, code: grpc.StatusCode, trailing_metadata: Any) -> bool:
        """Record a failed attempt; ``True`` when it ends the call (a fatal code).

        After ``False`` the caller asks `take_hedge` for the next hedge, and ends the
        call with this failure when none is sent and `in_flight` is 0.
        """
        self.in_flight -= 1
        if code in self.policy.non_fatal_codes and self.budget is not None:
            self.budget.on_failure()  # A6: a non-fatal failure is a failure for the budget
        if not self.stopped and server_delay(trailing_metadata) is not None:
            self.stopped = True
            _log.info("rpc_hedge_stopped_by_server", method=self.method, attempt=self.sent,
                      code=code.name)
        if code not in self.policy.non_fatal_codes:
            self.done = True
            return True
        return False

    def gave_up(self) -> bool:
        """After a non-fatal failure and no hedge sent: whether nothing is left in flight."""
        if self.in_flight <= 0:
            self.done = True
            return True
        return False

    def won(self) -> None:
        """An attempt succeeded: the call is over."""
        self.done = True
