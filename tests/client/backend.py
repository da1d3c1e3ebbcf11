"""A scripted test server for the client tests: each attempt gets the next scripted reply.

One sync ``grpc.server`` (real, port 0) serves both client stacks; it records every attempt
it sees (method, the ``grpc-previous-rpc-attempts`` header, the fake clock's time, the real
seconds left before the attempt's deadline) so tests assert what reached the network.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from octollm_grpc.testing import FakeClock

SERVICE = "test.Echo"
UNARY = f"/{SERVICE}/Unary"
SERVER_STREAM = f"/{SERVICE}/ServerStream"
CLIENT_STREAM = f"/{SERVICE}/ClientStream"
BIDI = f"/{SERVICE}/Bidi"
OTHER = f"/{SERVICE}/Other"

OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True)
class Reply:
    """What the server does on one attempt: send ``messages`` messages, then end with ``code``."""

    code: grpc.StatusCode = OK
    trailers: tuple[tuple[str, Any], ...] = ()
    messages: int = 2
    message: str = "scripted failure"
    wait: threading.Event | None = None


FAIL = Reply(UNAVAILABLE, messages=0)
SUCCEED = Reply()


@dataclass
class Attempt:
    method: str
    previous_attempts: str | None
    time: float
    requests: list[bytes] = field(default_factory=list)
    time_remaining: float | None = None
    """Real seconds left before the attempt's deadline when it arrived (``None``: no deadline)."""


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailers


def _remaining(context: Any) -> float | None:
    remaining = context.time_remaining()
    # grpcio reports "no deadline" as the int64 maximum in nanoseconds (~9.2e9 s).
    return None if remaining is None or remaining > 1e9 else float(remaining)


class Backend:
    """Serves ``script[i]`` to attempt ``i`` (the last entry repeats)."""

    def __init__(self, script: Sequence[Reply], clock: FakeClock | None = None) -> None:
        self.script = list(script)
        self.clock = clock
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()

    def _begin(self, method: str, context: Any, requests: list[bytes] | None = None) -> Reply:
        header = dict(context.invocation_metadata()).get("grpc-previous-rpc-attempts")
        with self._lock:
            index = len(self.attempts)
            self.attempts.append(Attempt(method, header,
                                         self.clock.now() if self.clock else 0.0,
                                         requests or [], _remaining(context)))
            reply = self.script[min(index, len(self.script) - 1)]
        if reply.wait is not None:
            reply.wait.wait(10)
        return reply

    @staticmethod
    def _end(reply: Reply, context: Any) -> None:
        if reply.code is not OK:
            context.abort_with_status(_Status(reply.code, reply.message, reply.trailers))

    def unary(self, request: bytes, context: Any) -> bytes:
        reply = self._begin(UNARY, context)
        self._end(reply, context)
        return b"ok"

    def server_stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        reply = self._begin(SERVER_STREAM, context)
        for index in range(reply.messages):
            yield b"m%d" % index
        self._end(reply, context)

    def client_stream(self, requests: Iterator[bytes], context: Any) -> bytes:
        received = list(requests)
        reply = self._begin(CLIENT_STREAM, context, received)
        self._end(reply, context)
        return b"%d" % len(received)

    def bidi(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        received = list(requests)
        reply = self._begin(BIDI, context, received)
        yield from received[: reply.messages]
        self._end(reply, context)

    def other(self, request: bytes, context: Any) -> bytes:
        reply = self._begin(OTHER, context)
        self._end(reply, context)
        return b"other"

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Other": grpc.unary_unary_rpc_method_handler(self.other),
        })

    def headers(self) -> list[str | None]:
        return [attempt.previous_attempts for attempt in self.attempts]

    def deadlines(self) -> list[float | None]:
        """Each attempt's seconds left before its deadline, as the server saw it."""
        return [attempt.time_remaining for attempt in self.attempts]

    def count(self, method: str | None = None) -> int:
        return sum(1 for a in self.attempts if method is None or a.method == method)
