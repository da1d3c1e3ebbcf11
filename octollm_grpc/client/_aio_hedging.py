"""Hedged calls on the aio stack: one task per attempt, the first success wins.

The decisions are `HedgeRace`'s; `AioHedge` starts
the attempts, waits for the first outcome or the hedge timer (the channel's ``sleep``, so tests
inject it) and cancels the losers through grpc (``call.cancel()``: the server sees the RPC
cancelled). A unary call races inside the interceptor and hands on the winner's own grpc call;
a response stream races for its first message when it is first read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from octollm_grpc.client._aio_calls import AsyncSleep, FailedCall, details_for
from octollm_grpc.client._delegation import AioDelegatingCall
from octollm_grpc.client._hedging import HedgeRace, HedgingPolicy
from octollm_grpc.client._resilience import MethodPlan, Resilience, ended_by_callers_deadline
from octollm_grpc.errors import CircuitOpenError, OctoLLMError
from octollm_grpc.status import from_rpc_error

__all__ = ["AioHedge", "HedgedResponseStream", "hedged_stream", "hedged_unary"]

_CANCELLED = grpc.StatusCode.CANCELLED

#: A step of an attempt: what to await on its call (its response, or its first message).
Step = Callable[[Any], Awaitable[Any]]


async def _outcome(step: Step, call: Any) -> tuple[Any, aio.AioRpcError | None]:
    try:
        return await step(call), None
    except aio.AioRpcError as error:
        return None, error


class AioHedge:
    """One hedged aio call: its race, breaker permit and attempts in flight."""

    def __init__(self, core: Resilience, plan: MethodPlan, policy: HedgingPolicy,
                 continuation: Any, details: aio.ClientCallDetails, request: Any,
                 sleep: AsyncSleep, token: int) -> None:
        self._core = core
        self._plan = plan
        self._policy = policy
        self._continuation = continuation
        self._details = details
        self._request = request
        self._sleep = sleep
        self._token = token
        start = core.clock() if details.timeout is not None else 0.0
        self.race = HedgeRace(policy, method=plan.method, budget=plan.budget,
                              metrics=plan.metrics, clock=core.clock,
                              timeout=details.timeout, start=start)
        self._calls: dict[asyncio.Future[Any], Any] = {}  # attempt's task -> its grpc call
        self._last_sent = core.clock()
        self.last: Any = None

    async def send(self, previous: int) -> Any:
        """Start attempt ``previous + 1`` (the first is ``send(0)``); its grpc call."""
        details = details_for(self._details, self.race.attempt_timeout(), previous)
        try:
            call = await self._continuation(details, self._request)
        except BaseException:
            self.race.unsent()
            raise
        self.last = call
        self._last_sent = self._core.clock()
        return call

    def _watch(self, step: Step, call: Any) -> None:
        self._calls[asyncio.ensure_future(_outcome(step, call))] = call

    def _timer(self) -> asyncio.Future[Any] | None:
        if not self.race.may_hedge():
            return None
        # From the last send, not from now: a stream's race starts when it is first read.
        elapsed = max(0.0, self._core.clock() - self._last_sent)
        return asyncio.ensure_future(self._sleep(max(0.0, self._policy.hedging_delay - elapsed)))

    async def run(self, first: Any, step: Step) -> tuple[Any, Any]:
        """Race the attempts (``first`` already started) through ``step``.

        Returns ``(winner's call, what step gave)``. Raises the typed error of the fatal (or
        last) failure. On any other exception (the caller's cancellation included) every
        attempt is cancelled, the permit freed without a verdict, and it propagates.
        """
        self._watch(step, first)
        timer = self._timer()
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = set(self._calls)
                if timer is not None:
                    waiting.add(timer)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                hedge: int | None = None
                if timer is not None and timer in done:
                    timer = None
                    hedge = self.race.take_hedge("delay")
                for task in done:
                    call = self._calls.pop(task, None)
                    if call is None:
                        continue  # the timer
                    value, error = task.result()
                    if error is None:
                        self.race.won()
                        self._plan.succeeded(self._token)
                        self._cancel_all()
                        return call, value
                    code: grpc.StatusCode = error.code()
                    self._plan.failed(code)
                    if self.race.failed(code, error.trailing_metadata()):
                        self._lose(call, error)
                    if hedge is None:
                        hedge = self.race.take_hedge(code.name)
                    if hedge is None and self.race.gave_up():
                        self._lose(call, error)
                if hedge is not None:
                    self._watch(step, await self.send(hedge))
                    if timer is not None:
                        timer.cancel()  # the delay restarts from this hedge
                    timer = self._timer()
        except BaseException:
            if timer is not None:
                timer.cancel()
            self.cancel()
            raise

    def cancel(self) -> None:
        """The caller's cancellation: every attempt cancelled, the permit freed if undecided."""
        self._cancel_all()
        if not self.race.done:
            self.race.won()
            breaker = self._plan.breaker
            if breaker is not None:
                breaker.release(self._token)

    def _lose(self, call: Any, error: aio.AioRpcError) -> None:
        """End the call with ``error``: one breaker verdict, the rest cancelled; raises."""
        self.last = call
        code = error.code()
        self._plan.record(self._token, code, ended_by_callers_deadline(
            code, None, self.race.deadline, self._core.clock()))
        self._cancel_all()
        raise _Lost(from_rpc_error(error), call) from error

    def _cancel_all(self) -> None:
        metrics = self._plan.metrics
        for task, call in list(self._calls.items()):
            call.cancel()
            task.cancel()
            if metrics is not None:
                metrics.attempt(_CANCELLED)
        self._calls.clear()


class _Lost(Exception):
    """The race ended with a failure: ``typed`` is raised to the caller."""

    def __init__(self, typed: OctoLLMError, call: Any) -> None:
        super().__init__(typed)
        self.typed = typed
        self.call = call


async def _awaited(call: Any) -> Any:
    return await call


async def _started(core: Resilience, plan: MethodPlan, policy: HedgingPolicy,
                   continuation: Any, details: aio.ClientCallDetails, request: Any,
                   sleep: AsyncSleep) -> FailedCall | tuple[AioHedge, Any]:
    """The breaker's permit taken and the first attempt sent: the hedge and that attempt, or
    the typed refusal of an open breaker. An attempt that cannot start frees the permit."""
    try:
        token = plan.acquire()
    except CircuitOpenError as error:
        return FailedCall(error)
    hedge = AioHedge(core, plan, policy, continuation, details, request, sleep, token)
    try:
        first = await hedge.send(0)
    except BaseException:
        hedge.race.won()
        if plan.breaker is not None:
            plan.breaker.release(token)
        raise
    return hedge, first


async def hedged_unary(core: Resilience, plan: MethodPlan, policy: HedgingPolicy,
                       continuation: Any, details: aio.ClientCallDetails, request: Any,
                       sleep: AsyncSleep) -> Any:
    """A hedged unary call, raced to its end: the winner's grpc call, or a
    `FailedCall` with the typed error."""
    started = await _started(core, plan, policy, continuation, details, request, sleep)
    if isinstance(started, FailedCall):
        return started
    hedge, first = started
    try:
        call, _ = await hedge.run(first, _awaited)
    except _Lost as lost:
        return FailedCall(lost.typed, lost.call)
    return call


def _read(call: Any) -> Awaitable[Any]:
    return call.read()  # type: ignore[no-any-return]


class HedgedResponseStream(AioDelegatingCall, aio.UnaryStreamCall):  # type: ignore[type-arg]
    """A hedged response stream: the attempts race for the first message (or a clean end)
    when it is first read; afterwards the winner's messages, typed errors, no hedging."""

    def __init__(self, hedge: AioHedge, first: Any) -> None:
        self._hedge = hedge
        self._call = first
        self._iterator: AsyncIterator[Any] | None = None
        self._error: OctoLLMError | None = None

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._iterator is None:
            self._iterator = self._messages()
        return self._iterator

    async def read(self) -> Any:
        try:
            return await anext(self.__aiter__())
        except StopAsyncIteration:
            return aio.EOF

    def cancel(self) -> bool:
        self._hedge.cancel()
        return bool(self._call.cancel())

    async def _messages(self) -> AsyncIterator[Any]:
        try:
            self._call, message = await self._hedge.run(self._call, _read)
        except _Lost as lost:
            self._call = lost.call
            self._error = lost.typed
            raise lost.typed from lost.__cause__
        while message is not aio.EOF:
            yield message
            try:
                message = await self._call.read()
            except aio.AioRpcError as error:
                self._error = from_rpc_error(error)
                raise self._error from error


async def hedged_stream(core: Resilience, plan: MethodPlan, policy: HedgingPolicy,
                        continuation: Any, details: aio.ClientCallDetails, request: Any,
                        sleep: AsyncSleep) -> Any:
    """A hedged response stream, its first attempt started (the race runs when read)."""
    started = await _started(core, plan, policy, continuation, details, request, sleep)
    if isinstance(started, FailedCall):
        return started
    hedge, first = started
    return HedgedResponseStream(hedge, first)
