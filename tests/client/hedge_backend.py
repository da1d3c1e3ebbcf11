"""A test server for hedged calls: each attempt is served by its attempt number.

The attempt number is the ``grpc-previous-rpc-attempts`` header (0 when absent), so which
attempt is slow does not depend on arrival order. A held attempt waits for its event while
watching its context: when the client cancels it, the server records that (``cancelled``).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from octollm_grpc.testing import FakeClock

SERVICE = "test.Hedge"
UNARY = f"/{SERVICE}/Unary"
STREAM = f"/{SERVICE}/Stream"
OK = grpc.StatusCode.OK

#: The longest a held handler waits (a test that forgets to release it still ends).
_HOLD_LIMIT_S = 10.0


@dataclass(frozen=True)
class Serve:
    """How one attempt is served: hold until ``release`` is set (if given), send ``messages``
    messages (streams), then end with ``code``. ``hold_after`` holds after the messages."""

    code: grpc.StatusCode = OK
    trailers: tuple[tuple[str, str], ...] = ()
    messages: int = 2
    release: threading.Event | None = None
    hold_after: bool = False


@dataclass
class Seen:
    """What the server saw of one attempt."""

    number: int
    header: str | None
    time_remaining: float | None
    cancelled: threading.Event = field(default_factory=threading.Event)


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, trailers: Any) -> None:
        self.code = code
        self.details = f"attempt failed with {code.name}"
        self.trailing_metadata = trailers


def _attempt_number(context: Any) -> tuple[int, str | None]:
    header = None
    for key, value in context.invocation_metadata():
        if key == "grpc-previous-rpc-attempts":
            header = value
    return (int(header) if header is not None else 0), header


def _remaining(context: Any) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e9 else float(remaining)


class HedgeBackend:
    """Serves attempt ``n`` with ``plan[n]`` (``default`` for numbers not in it)."""

    def __init__(self, plan: dict[int, Serve], default: Serve = Serve()) -> None:
        self.plan = plan
        self.default = default
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)

    def _begin(self, context: Any) -> tuple[Seen, Serve]:
        number, header = _attempt_number(context)
        seen = Seen(number, header, _remaining(context))
        with self._lock:
            self.seen.append(seen)
            self._arrived.notify_all()
        return seen, self.plan.get(number, self.default)

    def wait_arrivals(self, count: int, timeout: float = _HOLD_LIMIT_S) -> bool:
        """Wait until ``count`` attempts have reached a handler."""
        with self._lock:
            return self._arrived.wait_for(lambda: len(self.seen) >= count, timeout)

    def sleep_for(self, clock: FakeClock) -> Callable[[float], None]:
        """A sleep for the channel: the fake clock's, returning only once every attempt sent
        so far has reached the server (the n-th wait waits for n), so attempts arrive in
        order."""
        waits = itertools.count(1)

        def sleep(seconds: float) -> None:
            clock.sleep(seconds)
            self.wait_arrivals(next(waits))
        return sleep

    def async_sleep_for(self, clock: FakeClock) -> Callable[[float], Awaitable[None]]:
        """The asyncio form of :meth:`sleep_for`."""
        sleep = self.sleep_for(clock)

        async def async_sleep(seconds: float) -> None:
            await asyncio.to_thread(sleep, seconds)
        return async_sleep

    @staticmethod
    def _hold(serve: Serve, seen: Seen, context: Any) -> bool:
        """Wait for the release; False when the client cancelled meanwhile."""
        if serve.release is None:
            return True
        deadline = time.monotonic() + _HOLD_LIMIT_S
        while not serve.release.wait(0.005) and time.monotonic() < deadline:
            if not context.is_active():
                seen.cancelled.set()
                return False
        return True

    @staticmethod
    def _end(serve: Serve, context: Any) -> None:
        if serve.code is not OK:
            context.abort_with_status(_Status(serve.code, serve.trailers))

    def unary(self, request: bytes, context: Any) -> bytes:
        seen, serve = self._begin(context)
        if not self._hold(serve, seen, context):
            return b""
        self._end(serve, context)
        return b"attempt-%d" % seen.number

    def stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        seen, serve = self._begin(context)
        if not serve.hold_after and not self._hold(serve, seen, context):
            return
        for index in range(serve.messages):
            yield b"attempt-%d:m%d" % (seen.number, index)
        if serve.hold_after and not self._hold(serve, seen, context):
            return
        self._end(serve, context)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
        })

    def numbers(self) -> list[int]:
        """The attempt numbers seen, in arrival order."""
        return [seen.number for seen in self.seen]

    def attempt(self, number: int) -> Seen:
        """What the server saw of attempt ``number``."""
        return next(seen for seen in self.seen if seen.number == number)


class AioHedgeBackend(HedgeBackend):
    """The same plan on a ``grpc.aio`` server: a held attempt sees its cancellation as
    ``asyncio.CancelledError``."""

    async def _aio_hold(self, serve: Serve, seen: Seen) -> bool:
        if serve.release is None:
            return True
        release = serve.release
        try:
            deadline = time.monotonic() + _HOLD_LIMIT_S
            while not release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            seen.cancelled.set()
            raise
        return True

    async def aio_unary(self, request: bytes, context: Any) -> bytes:
        seen, serve = self._begin(context)
        await self._aio_hold(serve, seen)
        if serve.code is not OK:
            await context.abort(serve.code, f"attempt failed with {serve.code.name}",
                                trailing_metadata=serve.trailers)
        return b"attempt-%d" % seen.number

    async def aio_stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        seen, serve = self._begin(context)
        await self._aio_hold(serve, seen)
        for index in range(serve.messages):
            yield b"attempt-%d:m%d" % (seen.number, index)
        if serve.code is not OK:
            await context.abort(serve.code, f"attempt failed with {serve.code.name}")

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.aio_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(self.aio_stream),
        })
