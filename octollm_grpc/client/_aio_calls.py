"""The call objects of the aio interceptors: attempt loop state, failed calls, retrying calls.

`Attempts` is the shared attempt core (`octollm_grpc.client._attempts`) with the
aio way to call and to wait. The call objects are ``grpc.aio`` calls of our own, so the
typed error is raised by ``await call`` or by reading the stream, while ``await call.code()``
still answers a code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc import aio

from octollm_grpc.client._attempts import CallAttempts, WithTimeout
from octollm_grpc.client._channel import AsyncSleep
from octollm_grpc.client._delegation import AioDelegatingCall
from octollm_grpc.client._half_close import WatchedRequests
from octollm_grpc.client._local_errors import local_error
from octollm_grpc.client._resilience import ATTEMPTS_HEADER
from octollm_grpc.errors import OctoLLMError
from octollm_grpc.status import from_rpc_error

__all__ = [
    "AsyncSleep",
    "Attempts",
    "FailedCall",
    "ResponseStream",
    "RetryingCall",
    "StreamUnary",
    "awaited",
    "details_for",
]



def details_for(base: aio.ClientCallDetails, timeout: float | None,
                previous: int) -> aio.ClientCallDetails:
    """The details of one attempt: the caller's, with its timeout and attempt header."""
    metadata = aio.Metadata(*tuple(base.metadata or ()))
    if previous:
        # Ours replaces any the caller sent: the server must see one, correct count.
        if metadata.get_all(ATTEMPTS_HEADER):
            metadata.delete_all(ATTEMPTS_HEADER)
        metadata.add(ATTEMPTS_HEADER, str(previous))
    return aio.ClientCallDetails(base.method, timeout, metadata, base.credentials,
                                 base.wait_for_ready)


@dataclass(eq=False, kw_only=True, slots=True)
class Attempts(CallAttempts[aio.ClientCallDetails, AsyncSleep]):
    """One aio call's attempts (`CallAttempts`): calls and waits are awaited.

    ``watcher`` says when the caller's request stream has ended (``None``: no request stream).
    """

    with_timeout: WithTimeout = details_for
    watcher: WatchedRequests | None = None

    async def call(self, details: aio.ClientCallDetails) -> Any:
        """Start an attempt with ``details`` (its permit taken); free the permit if it cannot."""
        try:
            return await self.continuation(details, self.requests())
        except BaseException:
            self.release()  # the attempt never started
            raise

    async def after_failure(self, error: aio.AioRpcError, cancelled: bool = False) -> Any:
        """Record a failed attempt; start and return the next one, or raise the typed error."""
        await self.sleep(self.delay(error, cancelled))
        return await self.call(self.next(error))


_T = TypeVar("_T")


async def settled(value: _T) -> _T:
    """A coroutine that returns ``value`` (no ``self`` in its frame: see
    ``AioDelegatingCall.code``)."""
    return value


class FailedCall(
    aio.UnaryUnaryCall,  # type: ignore[type-arg]
    aio.StreamUnaryCall,  # type: ignore[type-arg]
    aio.UnaryStreamCall,  # type: ignore[type-arg]
    aio.StreamStreamCall,  # type: ignore[type-arg]
):
    """A finished call of any shape: awaiting or reading it raises the typed error."""

    def __init__(self, error: OctoLLMError, call: Any = None) -> None:
        self._error = error
        self._call = call

    def __await__(self) -> Generator[Any, None, Any]:
        raise self._error
        yield  # makes this a generator, as __await__ must be

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._raise()

    async def _raise(self) -> AsyncIterator[Any]:
        raise self._error
        yield  # makes this an async generator

    async def read(self) -> Any:
        raise self._error

    async def write(self, request: Any) -> None:
        raise asyncio.InvalidStateError("the RPC has already finished")

    async def done_writing(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def add_done_callback(self, callback: Any) -> None:
        callback(self)

    def time_remaining(self) -> float | None:
        return None

    async def initial_metadata(self) -> Any:
        return await self._call.initial_metadata() if self._call is not None else None

    async def trailing_metadata(self) -> Any:
        return self._error.trailing_metadata()

    def code(self) -> Coroutine[Any, Any, grpc.StatusCode]:
        # Not a coroutine function: see AioDelegatingCall.code.
        return settled(self._error.code())

    async def details(self) -> str:
        return self._error.details()

    async def debug_error_string(self) -> str:
        return self._error.debug_error_string()

    async def wait_for_connection(self) -> None:
        return None


class RetryingCall(AioDelegatingCall):
    """A call retried by `settle`: the current attempt answers, but a call that failed
    for good answers with its error."""

    _attempts: Attempts
    _error: OctoLLMError | None = None
    _cancelled = False

    def __init__(self, attempts: Attempts, call: Any) -> None:
        self._attempts = attempts
        self._call = call
        self._watcher = attempts.watcher

    @property
    def current(self) -> Any:
        """The current (or last) attempt's grpc call."""
        return self._call

    def cancel(self) -> bool:
        self._cancelled = True
        self._attempts.release()
        return bool(self._call.cancel())

    def code(self) -> Coroutine[Any, Any, grpc.StatusCode]:
        # Not a coroutine function: see AioDelegatingCall.code.
        if self._error is not None:
            return settled(self._error.code())
        return super().code()

    async def details(self) -> str:
        if self._error is not None:
            return self._error.details()
        return await super().details()

    async def settle(self, step: Callable[[Any], Awaitable[_T]],
                     failed: aio.AioRpcError | None = None) -> _T:
        """``await step(attempt)`` until an attempt gets through it; what it returned.

        ``failed``: the current attempt has already failed with it. A failure starts the next
        attempt when the core says so; the final one raises the typed error (kept in
        ``_error``). Anything else (the caller's cancellation, an error that is not a status)
        cancels the attempt, frees its permit without a verdict, and propagates.
        """
        attempts = self._attempts
        while True:
            if failed is not None:
                try:
                    self._call = await attempts.after_failure(failed, self._cancelled)
                except OctoLLMError as typed:
                    self._error = typed
                    raise
            try:
                outcome = await step(self._call)
            except aio.AioRpcError as error:
                local = local_error(error)
                if local is not None:  # grpc refused to send it: no verdict, no retry
                    attempts.release()
                    self._error = local
                    raise local from None
                failed = error
                continue
            except BaseException as error:
                self._call.cancel()
                attempts.release()
                local = local_error(error)
                if local is not None:  # grpc refused to send it: typed, not a traceback
                    self._error = local
                    raise local from None
                raise
            attempts.succeeded()
            return outcome


async def awaited(call: Any) -> Any:
    """A settle step: the attempt's response."""
    return await call


def _read(call: Any) -> Awaitable[Any]:
    return call.read()  # type: ignore[no-any-return]


class StreamUnary(RetryingCall, aio.StreamUnaryCall):  # type: ignore[type-arg]
    """A client-streaming call: its ``await`` retries (when replayable) and raises typed."""

    def __init__(self, attempts: Attempts, call: Any) -> None:
        super().__init__(attempts, call)
        self._response: Any = None
        self._finished = False

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result().__await__()

    async def _result(self) -> Any:
        if self._error is not None:
            raise self._error
        if not self._finished:
            self._response = await self.settle(awaited)
            self._finished = True
        return self._response


class ResponseStream(RetryingCall, aio.UnaryStreamCall, aio.StreamStreamCall):  # type: ignore[type-arg]
    """A response stream retried until its first message; typed errors afterwards."""

    def __init__(self, attempts: Attempts, call: Any) -> None:
        super().__init__(attempts, call)
        self._iterator: AsyncIterator[Any] | None = None

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._iterator is None:
            self._iterator = self._messages()
        return self._iterator

    async def read(self) -> Any:
        try:
            return await anext(self.__aiter__())
        except StopAsyncIteration:
            return aio.EOF

    async def _messages(self) -> AsyncIterator[Any]:
        message = await self.settle(_read)
        while message is not aio.EOF:
            yield message
            try:
                message = await self._call.read()
            except aio.AioRpcError as error:
                self._error = from_rpc_error(error)
                raise self._error from error
