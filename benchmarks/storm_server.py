"""The storm's server: a fixed capacity, a trigger window, and a record of every attempt.

It admits ``slots`` calls at a time (each takes ``service_s``), queues up to ``queue`` more and
rejects the rest at once with ``UNAVAILABLE``, like a service shedding load. Like a thread-pool
server, it does not notice a caller giving up: an attempt abandoned by its client (deadline)
still waits for and takes its slot, so under overload the server spends capacity on answers
nobody reads. During the trigger
it either fails everything (``outage``) or runs with half the slots (``brownout``). Every attempt
is recorded on arrival (whatever becomes of it) with its arrival time and the start time of the
logical call it belongs to (sent by the client in metadata); the parent reads the record over
the control pipe.

The trigger is armed by the client itself with an ``Arm`` call just before the load starts, so
the schedule is right however long the client process took to start; ``Arm`` first waits for
leftover work of an earlier storm, and one without a schedule only does that.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing.connection
import time
from typing import Any

import grpc
from google.protobuf import struct_pb2

from benchmarks import payload, procs

ARM = "Arm"
ARM_PATH = f"/{payload.STORM_SERVICE}/{ARM}"


class Gate:
    """At most ``limit`` calls inside, ``queue`` more waiting in order; the rest turned away."""

    def __init__(self, limit: int, queue: int) -> None:
        self.limit = limit
        self.queue = queue
        self.active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def enter(self) -> bool:
        """Take a slot (waiting in the queue if needed); False if the queue is full."""
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return True
        if len(self._waiters) >= self.queue:
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # the slot was handed over just as the caller gave up
            else:
                self._waiters.remove(waiter)
            raise
        return True

    @property
    def idle(self) -> bool:
        """No call inside and none waiting."""
        return self.active == 0 and not self._waiters

    def leave(self) -> None:
        """Give a slot back and hand it to the next waiter."""
        self.active -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        """Change the number of slots (calls already inside finish normally)."""
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self.active < self.limit and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)


class StormService:
    """The Work and Arm handlers and the attempt record."""

    def __init__(self, slots: int, queue: int, service_s: float) -> None:
        self.slots = slots
        self.service_s = service_s
        self.gate = Gate(slots, queue=queue)
        self.trigger = (float("inf"), float("inf"), "outage")
        # (arrival, call start) per attempt
        self.attempts: list[tuple[float, float]] = []
        self._response = struct_pb2.Value(string_value="done")

    async def arm(self, request: struct_pb2.Value, context: Any) -> struct_pb2.Value:
        # Abandoned work of an earlier storm must not eat into this one's capacity.
        for _ in range(500):
            if self.gate.idle:
                break
            await asyncio.sleep(0.01)
        fields = request.struct_value.fields
        if "mode" in fields:
            self.trigger = (fields["start"].number_value, fields["end"].number_value,
                            fields["mode"].string_value)
        else:
            self.trigger = (float("inf"), float("inf"), "outage")
        self.attempts.clear()
        return self._response

    async def work(self, request: struct_pb2.Value, context: Any) -> struct_pb2.Value:
        now = time.monotonic()
        call_start = now
        for key, value in context.invocation_metadata() or ():
            if key == payload.CALL_START_KEY:
                call_start = float(value)
        self.attempts.append((now, call_start))
        start, end, mode = self.trigger
        in_trigger = start <= now < end
        if in_trigger and mode == "outage":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "outage")
        self.gate.set_limit(max(1, self.slots // 2) if in_trigger else self.slots)
        # Shielded: a cancelled call (the client's deadline) leaves its work running.
        if not await asyncio.shield(asyncio.ensure_future(self._serve())):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "overloaded")
        return self._response

    async def _serve(self) -> bool:
        if not await self.gate.enter():
            return False
        try:
            await asyncio.sleep(self.service_s)
        finally:
            self.gate.leave()
        return True

    def on_message(self, message: Any) -> Any:
        if message == "attempts":
            return list(self.attempts)
        raise ValueError(f"unknown control message {message!r}")


def storm_server_main(
    slots: int, queue: int, service_s: float, conn: multiprocessing.connection.Connection
) -> None:
    """Process entry point: the Storm service on an asyncio server."""
    async def main() -> None:
        service = StormService(slots, queue, service_s)
        handler = grpc.method_handlers_generic_handler(payload.STORM_SERVICE, {
            payload.WORK: grpc.unary_unary_rpc_method_handler(
                service.work, request_deserializer=payload.deserialize,
                response_serializer=payload.serialize),
            ARM: grpc.unary_unary_rpc_method_handler(
                service.arm, request_deserializer=payload.deserialize,
                response_serializer=payload.serialize),
        })
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        await procs.serve_aio(server, conn, service.on_message)

    asyncio.run(main())
