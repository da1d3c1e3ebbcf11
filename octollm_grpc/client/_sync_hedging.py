"""Hedged calls on the sync stack: concurrent attempts, the first success wins.

The decisions are `HedgeRace`'s; this module starts the
attempts (each one a future or a response stream from grpc), times the hedges on the shared
retry scheduler (`octollm_grpc.client._scheduler`, so an injected ``sleep`` replaces the
wait) and cancels the losers through grpc (``call.cancel()``: the server sees the RPC
cancelled).

A blocking unary call hands an interceptor a continuation that blocks until its attempt is
over, so no hedge could start beside it: `HedgingChannel` (what ``resilient_channel``
returns) makes a hedged method's blocking calls wait on ``.future()`` instead. Response
streams are read by one short-lived thread per attempt until its first message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from octollm_grpc.client._call_types import CallFuture, CallStream
from octollm_grpc.client._delegation import DelegatingCall
from octollm_grpc.client._hedging import HedgeRace, HedgingPolicy
from octollm_grpc.client._resilience import MethodPlan, Resilience, ended_by_callers_deadline
from octollm_grpc.client._scheduler import shared_scheduler
from octollm_grpc.client._sync_calls import CallDetails, FailedStream, UnaryFuture
from octollm_grpc.errors import CircuitOpenError, OctoLLMError
from octollm_grpc.status import from_rpc_error

__all__ = ["HedgedFuture", "HedgedStream", "HedgingChannel", "hedged_stream", "hedged_unary"]

_CANCELLED = grpc.StatusCode.CANCELLED


class _Hedging:
    """What both sync hedged call objects share: the race, the permit, the attempts."""

    def __init__(self, core: Resilience, plan: MethodPlan, policy: HedgingPolicy,
                 continuation: Any, details: grpc.ClientCallDetails, request: Any,
                 sleep: Callable[[float], None]) -> None:
        self._core = core
        self._plan = plan
        self._policy = policy
        self._continuation = continuation
        self._details = details
        self._request = request
        self._sleep = sleep
        start = core.clock() if details.timeout is not None else 0.0
        self._race = HedgeRace(policy, method=plan.method, budget=plan.budget,
                               metrics=plan.metrics, clock=core.clock,
                               timeout=details.timeout, start=start)
        self._lock = threading.Lock()
        self._calls: dict[int, Any] = {}  # attempt number -> its grpc call, while in flight
        self._timer_generation = 0  # a timer set before the latest send is stale
        self._over = False
        self._token = 0

    def _start_attempt(self, previous: int) -> Any:
        details = CallDetails(self._details, self._race.attempt_timeout(), previous)
        return self._continuation(details, self._request)

    def _after_send(self, call: Any) -> None:
        """Set the timer of the next hedge (a fresh one: the last send restarts the delay)."""
        with self._lock:
            if self._over or not self._race.may_hedge():
                return
            self._timer_generation += 1
            generation = self._timer_generation
        shared_scheduler().call_later(self._policy.hedging_delay,
                                      lambda: self._timer(generation), self._sleep)

    def _timer(self, generation: int) -> None:
        with self._lock:
            if generation != self._timer_generation or self._over:
                return
            previous = self._race.take_hedge("delay")
        if previous is not None:
            self._send(previous)

    def _send(self, previous: int) -> None:
        raise NotImplementedError

    def _end_attempts(self, keep: int | None) -> None:
        """Cancel every attempt in flight but ``keep`` (the server sees each cancelled)."""
        with self._lock:
            losers = [call for index, call in self._calls.items() if index != keep]
            self._calls.clear()
        metrics = self._plan.metrics
        for call in losers:
            call.cancel()
            if metrics is not None:
                metrics.attempt(_CANCELLED)

    def _record_failure(self, code: grpc.StatusCode) -> None:
        """The call's one breaker verdict, for its final failure."""
        deadline = self._race.deadline
        self._plan.record(self._token, code, ended_by_callers_deadline(
            code, None, deadline, self._core.clock()))


class HedgedFuture(_Hedging, UnaryFuture):
    """A hedged unary call: a ``grpc.Future`` and ``grpc.Call`` (``UnaryFuture``'s side),
    resolved by the first successful attempt, the fatal failure or the last failure."""

    def __init__(self, core: Resilience, plan: MethodPlan, policy: HedgingPolicy,
                 continuation: Any, details: grpc.ClientCallDetails, request: Any,
                 sleep: Callable[[float], None]) -> None:
        _Hedging.__init__(self, core, plan, policy, continuation, details, request, sleep)
        # UnaryFuture's resolution state (its attempt chain is not used).
        self._condition = threading.Condition()
        self._current: Any = None
        self._finished = False
        self._cancelled = False
        self._outcome_cancelled = False
        self._response: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[grpc.Future[Any]], None]] = []

    def start(self) -> HedgedFuture:
        """Send the first attempt (its breaker permit taken); return ``self``.

        A breaker that is open resolves the future at once with ``CircuitOpenError``.
        """
        try:
            self._token = self._plan.acquire()
        except CircuitOpenError as error:
            self._over = True
            self._finish(error=error)
            return self
        self._send(0)
        return self

    def _send(self, previous: int) -> None:
        try:
            call = self._start_attempt(previous)
        except BaseException as error:  # noqa: BLE001 - not a status: the call cannot go on
            with self._lock:
                self._race.unsent()
                first = previous == 0
            if first:
                self._plan_release()
                self._over = True
                self._finish(error=error)
            return
        with self._lock:
            late = self._over
            if not late:
                self._calls[previous] = call
                self._current = call
        if late:
            call.cancel()
            return
        if not call.done():
            self._after_send(call)
        call.add_done_callback(lambda future: self._attempt_done(previous, future))

    def _plan_release(self) -> None:
        breaker = self._plan.breaker
        if breaker is not None:
            breaker.release(self._token)

    def _attempt_done(self, previous: int, future: CallFuture) -> None:  # type: ignore[override]
        with self._lock:
            if self._over or self._calls.pop(previous, None) is None:
                return  # a loser, cancelled after the call was decided
        try:
            error = future.exception()
        except grpc.FutureCancelledError:
            error = None
            cancelled = True
        else:
            cancelled = False
        if cancelled:  # cancelled by someone but us: no verdict
            self._conclude(future, previous, error=None, cancelled=True)
        elif error is None:
            self._conclude(future, previous)
        elif isinstance(error, grpc.RpcError):
            self._failed(future, previous, error)
        else:
            self._conclude(future, previous, error=error)

    def _failed(self, future: CallFuture, previous: int, error: grpc.RpcError) -> None:
        code: grpc.StatusCode = error.code()
        metrics = self._plan.metrics
        if metrics is not None:
            metrics.attempt(code)
        with self._lock:
            if self._over:
                return
            ends = self._race.failed(code, error.trailing_metadata())
            hedge = None if ends else self._race.take_hedge(code.name)
            if not ends and hedge is None:
                ends = self._race.gave_up()
        if ends:
            self._conclude(future, previous, error=error)
        elif hedge is not None:
            self._send(hedge)

    def _conclude(self, future: CallFuture, winner: int, *, error: BaseException | None = None,
                  cancelled: bool = False) -> None:
        with self._lock:
            if self._over:
                return
            self._over = True
            self._race.won()
            self._current = future
        self._end_attempts(keep=winner)
        if cancelled:
            self._plan_release()
            self._finish(cancelled=True)
        elif error is None:
            self._plan.succeeded(self._token)
            self._finish(response=future.result())
        elif isinstance(error, grpc.RpcError):
            self._record_failure(error.code())
            self._finish(error=from_rpc_error(error))
        else:
            self._plan_release()
            self._finish(error=error)

    def _next_attempt(self, error: grpc.RpcError) -> None:  # pragma: no cover - not used
        raise AssertionError("a hedged call has no retry chain")

    def cancel(self) -> bool:
        """Cancel every attempt in flight; the call resolves as cancelled."""
        with self._lock:
            if self._over:
                return False
            self._over = True
            self._race.won()
        self._cancelled = True
        self._end_attempts(keep=None)
        self._plan_release()
        return self._finish(cancelled=True)

    def time_remaining(self) -> float | None:  # type: ignore[override]
        current = self._current
        return current.time_remaining() if current is not None else None

    def _outcome_call(self) -> Any:
        with self._condition:
            self._condition.wait_for(lambda: self._finished)
        if self._current is None or isinstance(self._error, CircuitOpenError):
            return self._error if self._error is not None else _CancelledStatus()
        return self._current


class _CancelledStatus:
    """The status of a call cancelled before any attempt answered."""

    def code(self) -> grpc.StatusCode:
        return _CANCELLED

    def details(self) -> str:
        return "Locally cancelled by caller"

    def initial_metadata(self) -> Any:
        return None

    def trailing_metadata(self) -> Any:
        return None


def hedged_unary(core: Resilience, plan: MethodPlan, policy: HedgingPolicy,
                 continuation: Any, details: grpc.ClientCallDetails, request: Any,
                 sleep: Callable[[float], None]) -> HedgedFuture:
    """A hedged unary call, its first attempt sent (see `HedgedFuture`)."""
    return HedgedFuture(core, plan, policy, continuation, details, request, sleep).start()


# -- response streams ---------------------------------------------------------------------

_MESSAGE, _END, _ERROR, _RAISED = "message", "end", "error", "raised"


class HedgedStream(_Hedging, DelegatingCall, Iterator[Any]):
    """A hedged response stream: the first attempt to send a message (or to end cleanly)
    wins, before that hedges go as `HedgedFuture`'s do; afterwards the winner's
    messages and its typed errors, never hedged again."""

    def __init__(self, core: Resilience, plan: MethodPlan, policy: HedgingPolicy,
                 continuation: Any, details: grpc.ClientCallDetails, request: Any,
                 sleep: Callable[[float], None]) -> None:
        super().__init__(core, plan, policy, continuation, details, request, sleep)
        self._call: Any = None
        self._settled = False
        self._cancelled = False
        self._outcomes: list[tuple[int, str, Any]] = []
        self._arrived = threading.Condition(self._lock)

    def start(self, token: int) -> HedgedStream:
        """Send the first attempt under the breaker permit ``token``; return ``self``."""
        self._token = token
        self._send(0)
        return self

    def _send(self, previous: int) -> None:
        try:
            call = self._start_attempt(previous)
        except BaseException as error:  # noqa: BLE001 - not a status: raised to the reader
            with self._lock:
                self._race.unsent()
                self._outcomes.append((previous, _RAISED, error))
                self._arrived.notify_all()
            return
        with self._lock:
            late = self._over
            if not late:
                self._calls[previous] = call
                self._call = call
        if late:
            call.cancel()
            return
        threading.Thread(target=self._first_of, args=(previous, call), daemon=True,
                         name="octollm-grpc-hedge").start()
        self._after_send(call)

    def _first_of(self, previous: int, call: CallStream) -> None:
        """On its own thread: wait for an attempt's first message, end or error."""
        outcome: tuple[int, str, Any]
        try:
            outcome = (previous, _MESSAGE, next(call))
        except StopIteration:
            outcome = (previous, _END, None)
        except grpc.RpcError as error:
            outcome = (previous, _ERROR, error)
        except BaseException as error:  # noqa: BLE001 - handed to the reader, raised there
            outcome = (previous, _RAISED, error)
        with self._lock:
            self._outcomes.append(outcome)
            self._arrived.notify_all()

    def __iter__(self) -> HedgedStream:
        return self

    def __next__(self) -> Any:
        if self._settled:
            try:
                return next(self._call)
            except grpc.RpcError as error:
                raise from_rpc_error(error) from error
        while True:
            with self._lock:
                self._arrived.wait_for(lambda: bool(self._outcomes) or self._cancelled)
                if self._cancelled:
                    self._settled = True
                    raise from_rpc_error(_CancelledStatus())
                previous, kind, value = self._outcomes.pop(0)
                if self._calls.get(previous) is None and kind != _RAISED:
                    continue  # a loser's late outcome
                call = self._calls.get(previous)
            if kind in (_MESSAGE, _END):
                self._win(previous, call)
                if kind == _END:
                    raise StopIteration
                return value
            if kind == _RAISED:
                self._give_up(previous)
                raise value
            self._on_error(previous, call, value)

    def _win(self, previous: int, call: Any) -> None:
        with self._lock:
            self._over = True
            self._race.won()
            self._call = call
        self._settled = True
        self._end_attempts(keep=previous)
        self._plan.succeeded(self._token)

    def _give_up(self, previous: int) -> None:
        with self._lock:
            self._over = True
            self._race.won()
        self._settled = True
        self._end_attempts(keep=None)
        breaker = self._plan.breaker
        if breaker is not None:
            breaker.release(self._token)

    def _on_error(self, previous: int, call: Any, error: grpc.RpcError) -> None:
        code: grpc.StatusCode = error.code()
        metrics = self._plan.metrics
        if metrics is not None:
            metrics.attempt(code)
        with self._lock:
            self._calls.pop(previous, None)
            ends = self._race.failed(code, error.trailing_metadata())
            hedge = None if ends else self._race.take_hedge(code.name)
            if not ends and hedge is None:
                ends = self._race.gave_up()
            if ends:
                self._over = True
                self._call = call
        if hedge is not None:
            self._send(hedge)
            return
        if ends:
            self._settled = True
            self._end_attempts(keep=None)
            self._record_failure(code)
            raise from_rpc_error(error) from error

    def cancel(self) -> bool:
        """Cancel every attempt in flight (the caller's cancellation)."""
        with self._lock:
            was_over = self._over
            self._over = True
            self._race.won()
            self._cancelled = True
            current = self._call
            self._arrived.notify_all()
        if was_over:
            return bool(current.cancel()) if current is not None else False
        self._end_attempts(keep=None)
        breaker = self._plan.breaker
        if breaker is not None:
            breaker.release(self._token)
        return True


def hedged_stream(core: Resilience, plan: MethodPlan, policy: HedgingPolicy,
                  continuation: Any, details: grpc.ClientCallDetails, request: Any,
                  sleep: Callable[[float], None]) -> HedgedStream | FailedStream:
    """A hedged response stream, its first attempt sent; an open breaker gives a stream
    whose reading raises ``CircuitOpenError``."""
    try:
        token = plan.acquire()
    except CircuitOpenError as error:
        return FailedStream(error)
    return HedgedStream(core, plan, policy, continuation, details, request,
                        sleep).start(token)


# -- the channel: blocking calls of hedged methods go through .future() ---------------------


class _FutureBacked:
    """A unary-unary multi-callable whose blocking calls wait on its ``.future()``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: bool | None = None,
                 compression: Any = None) -> Any:
        return self.with_call(request, timeout, metadata, credentials, wait_for_ready,
                              compression)[0]

    def with_call(self, request: Any, timeout: float | None = None, metadata: Any = None,
                  credentials: Any = None, wait_for_ready: bool | None = None,
                  compression: Any = None) -> tuple[Any, Any]:
        future = self._inner.future(request, timeout=timeout, metadata=metadata,
                                    credentials=credentials, wait_for_ready=wait_for_ready,
                                    compression=compression)
        try:
            return future.result(), future
        except OctoLLMError:
            raise
        except grpc.FutureCancelledError:
            raise from_rpc_error(_CancelledStatus()) from None

    def future(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.future(*args, **kwargs)


class HedgingChannel(grpc.Channel):
    """A resilient sync channel: ``inner`` (the intercepted channel) with hedged methods'
    blocking unary calls made through ``.future()``, so their hedges run beside them."""

    def __init__(self, inner: grpc.Channel, core: Resilience) -> None:
        self._inner = inner
        self._core = core

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        multi_callable = self._inner.unary_unary(method, *args, **kwargs)
        if self._core.plan(method).hedging is not None:
            return _FutureBacked(multi_callable)
        return multi_callable

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._inner.unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._inner.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._inner.stream_stream(method, *args, **kwargs)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._inner.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._inner.unsubscribe(callback)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> HedgingChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._inner.close()
