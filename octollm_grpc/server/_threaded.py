"""Plain ``def`` handlers on a ``grpc.aio`` server: the same stack as coroutine handlers.

grpc.aio runs a handler that is neither a coroutine function nor an async generator function
in its thread pool, with a sync servicer context of its own. That context cannot tell the
pipeline what the handler set (no ``code()``, ``details()``, ``trailing_metadata()``), and its
``abort()`` returns instead of raising, so the handler runs on after aborting.
`ThreadContext` wraps it: it records what the handler sets and raises on ``abort``, as
the sync stack does. The wrappers here are ``def`` functions again, so grpc.aio keeps running
them (and the user's handler) in its own thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self, cast

import grpc
import grpc.aio

from octollm_grpc.server._core import MethodPlan, Pipeline, SyncCall
from octollm_grpc.server._handlers import Metadata, ServicerContext
from octollm_grpc.status._limits import RichStatus

__all__ = ["ThreadContext", "threaded_behavior"]

Behavior = Callable[[Any, Any], Any]


class _HandlerAborted(Exception):
    """The handler called ``context.abort``: it stops, and the wrapper sends the status."""


class _PoolContext(Protocol):
    """What we use of grpc.aio's own context for thread-pool handlers (no public type)."""

    def invocation_metadata(self) -> Metadata | None: ...
    def peer(self) -> str: ...
    def time_remaining(self) -> float | None: ...
    def set_code(self, code: grpc.StatusCode) -> None: ...
    def set_details(self, details: str) -> None: ...
    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, Any]]) -> None: ...
    def abort(self, code: grpc.StatusCode, details: str,
              trailing_metadata: Sequence[tuple[str, Any]]) -> None: ...


class ThreadContext:
    """The servicer context a ``def`` handler on a ``grpc.aio`` server receives.

    It offers the sync ``grpc.ServicerContext`` API: ``abort`` and ``abort_with_status`` raise
    (the handler stops there, the call ends with that status), and ``code()``, ``details()`` and
    ``trailing_metadata()`` give back what was set. Everything else is grpc.aio's own.
    """

    __slots__ = ("_code", "_context", "_details", "_trailers")

    def __init__(self, context: _PoolContext) -> None:
        self._context = context
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._trailers: Sequence[tuple[str, Any]] = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    # What the core reads on every call, spelled out (and not found through __getattr__).
    def invocation_metadata(self) -> Metadata | None:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return self._context.peer()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code
        self._context.set_code(code)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details
        self._context.set_details(details)

    def details(self) -> str | None:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailers = trailing_metadata
        self._context.set_trailing_metadata(trailing_metadata)

    def trailing_metadata(self) -> Sequence[tuple[str, Any]]:
        return self._trailers

    def abort(
        self, code: grpc.StatusCode, details: str = "",
        trailing_metadata: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Stop the handler; the call ends with this status (trailers: these, else those set).

        The status is sent by the wrapper once the call is logged and counted: after it is
        sent, the call (and what ``peer()`` reads) may be gone at any moment.
        """
        self.set_code(code)
        self.set_details(details)
        if trailing_metadata:
            self.set_trailing_metadata(trailing_metadata)
        raise _HandlerAborted

    def abort_with_status(self, status: grpc.Status) -> None:
        self.abort(status.code, status.details, status.trailing_metadata)

    def send_status(
        self, code: grpc.StatusCode, details: str, trailing_metadata: Sequence[tuple[str, Any]]
    ) -> None:
        """End the call with this status, waiting until grpc.aio has sent it."""
        # grpc.aio's sync abort blocks until the status is sent; depending on the grpcio
        # version it raises AbortError or swallows it. grpc.aio raises that error itself once
        # the handler returns, which ends the call quietly.
        with contextlib.suppress(grpc.aio.AbortError):
            self._context.abort(code, details, tuple(trailing_metadata))


def _waiter(loop: asyncio.AbstractEventLoop) -> Callable[[Awaitable[Any]], Any]:
    # A coroutine verifier runs on the server's event loop; the worker thread waits for it.
    async def run(awaitable: Awaitable[Any]) -> Any:
        return await awaitable

    def wait(awaitable: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(run(awaitable), loop).result()

    return wait


class _StatusSent(Exception):
    """The wrapper sent the call's status: the handler ends quietly."""


class _Call(SyncCall):
    """A call of a ``def`` handler on grpc.aio: its status sent through `ThreadContext`."""

    __slots__ = ("wait",)

    def waiting(self, wait: Callable[[Awaitable[Any]], Any]) -> Self:
        """This call, its coroutine verifier's verdict awaited through ``wait``."""
        self.wait = wait
        return self

    def end_failed(self, exc: BaseException) -> None:
        # GeneratorExit: grpc stopped consuming (the client went away). This may run on the
        # event loop (when the generator is collected): never wait on the loop from here.
        cancelled = isinstance(exc, GeneratorExit)
        failure = self.pipeline.fail(self, exc, cancelled=cancelled,
                                     aborted=isinstance(exc, _HandlerAborted))
        if cancelled:
            return
        # Logged and counted first, then sent: see ThreadContext.abort.
        context = cast(ThreadContext, self.context)
        if failure.status is not None:
            status = failure.status
            context.send_status(status.code, status.details, status.trailing_metadata)
        else:  # the handler's own abort: its code and message, our request id in the trailers
            code = context.code() or grpc.StatusCode.UNKNOWN
            context.send_status(code, context.details() or "", failure.trailers or ())
        raise _StatusSent

    def end_refused(self, status: RichStatus) -> None:
        cast(ThreadContext, self.context).send_status(status.code, status.details,
                                                      status.trailing_metadata)
        raise _StatusSent


def _unary_response(
    pipeline: Pipeline, plan: MethodPlan, behavior: Behavior, wait: Callable[[Any], Any]
) -> Behavior:
    def handle(request: Any, raw_context: _PoolContext) -> Any:
        context = ThreadContext(raw_context)
        try:
            with _Call.begin(pipeline, plan, context, request).waiting(wait):
                return behavior(request, context)
        except _StatusSent:
            return None  # grpc.aio discards any response

    return handle


def _stream_response(
    pipeline: Pipeline, plan: MethodPlan, behavior: Behavior, wait: Callable[[Any], Any]
) -> Callable[[Any, Any], Generator[Any, None, None]]:
    # A generator function: grpc.aio calls it on the loop but iterates it in its thread pool,
    # so all of this (and the handler) runs in worker threads, each step maybe in another one.
    def body(request: Any, raw_context: _PoolContext) -> Generator[Any, None, None]:
        context = ThreadContext(raw_context)
        try:
            with _Call.begin(pipeline, plan, context, request).waiting(wait):
                yield from behavior(request, context)
        except _StatusSent:
            return

    def handle(request: Any, raw_context: _PoolContext) -> Generator[Any, None, None]:
        # Every step runs in one context of its own: the request id bound by the first step
        # is seen (and unbound) by the later ones, whichever worker thread runs them.
        run = contextvars.copy_context().run
        steps = body(request, raw_context)
        try:
            while True:
                try:
                    response = run(next, steps)
                except StopIteration:
                    return
                yield response
        finally:
            run(steps.close)

    return handle


def threaded_behavior(
    pipeline: Pipeline,
    plan: MethodPlan,
    behavior: Behavior,
    response_streaming: bool,
    loop: asyncio.AbstractEventLoop,
) -> Behavior:
    """``behavior`` (a ``def`` handler) wrapped in the pipeline, still a ``def`` function."""
    wrap = _stream_response if response_streaming else _unary_response
    return wrap(pipeline, plan, behavior, _waiter(loop))


if TYPE_CHECKING:  # mypy checks that the contexts the core is given have what it uses

    def _core_contexts(
        aio: grpc.aio.ServicerContext[Any, Any], thread: ThreadContext
    ) -> tuple[ServicerContext, ServicerContext]:
        return aio, thread
