"""Deadline and request id flow through a served call to its outbound calls, both stacks.

Two real hops: caller -> middle (our server stack; its handler calls on through a resilient
channel that sets no timeout) -> downstream, which records the deadline and ``x-request-id``
it was given. Concurrent callers with different deadlines and ids must each see their own.
"""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent import futures
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from octollm_grpc.client import aio as client_aio
from octollm_grpc.client import resilient_channel
from octollm_grpc.observability import _propagation as propagation
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from tests.servers import aio_server, sync_server

DOWN = "/test.Down/Record"
MIDDLE = "/test.Middle/Call"
CALLERS = 8


class Downstream:
    """Answers with what it was given: ``<request id>|<seconds left or 'none'>``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, float | None]] = []
        self.raw: list[float | None] = []  # time_remaining() as grpc reported it
        self._lock = threading.Lock()

    def record(self, request: bytes, context: Any) -> bytes:
        rid = dict(context.invocation_metadata()).get("x-request-id")
        remaining = context.time_remaining()
        self.raw.append(remaining)
        if remaining is not None and remaining > 1e9:
            remaining = None  # sync servers report ~9.2e18 s left for "no deadline"
        with self._lock:
            self.seen.append((rid, remaining))
        return f"{rid}|{'none' if remaining is None else remaining}".encode()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("test.Down", {
            "Record": grpc.unary_unary_rpc_method_handler(self.record)})


def _parse(answer: bytes) -> tuple[str, float | None]:
    rid, remaining = answer.decode().split("|")
    return rid, None if remaining == "none" else float(remaining)


def _timeout(i: int) -> float:
    return 3.0 + 2.0 * i  # 3, 5, 7 ... s: far enough apart that a mix-up cannot pass


def _check(answers: list[bytes]) -> None:
    for i, answer in enumerate(answers):
        rid, remaining = _parse(answer)
        assert rid == f"rid-{i}"
        assert remaining is not None
        # About the caller's timeout (grpc core may round a timeout up on the wire: 11 s
        # arrived as 11.1 s), and above the next smaller one (2 s less): it is this caller's.
        assert _timeout(i) - 2.0 < remaining <= _timeout(i) * 1.1


def _middle_sync(down: grpc.Channel, explicit: float | None) -> grpc.GenericRpcHandler:
    call = down.unary_unary(DOWN)

    def handle(request: bytes, context: Any) -> bytes:
        answer: bytes = call(request, timeout=explicit)  # no timeout, no metadata given
        return answer

    return grpc.method_handlers_generic_handler("test.Middle", {
        "Call": grpc.unary_unary_rpc_method_handler(handle)})


def _interceptors() -> list[Any]:
    return server_interceptors(logger=False, metrics=False)


def test_sync_deadline_and_request_id_flow_per_call_under_concurrency() -> None:
    """Sync: 8 concurrent two-hop calls; each downstream call has its caller's id and time."""
    downstream = Downstream()
    with sync_server([downstream.handler()]) as down_target:
        down = resilient_channel(down_target, registry=CollectorRegistry())
        with sync_server([_middle_sync(down, None)], _interceptors(), workers=CALLERS) as target:
            channel = grpc.insecure_channel(target)
            call = channel.unary_unary(MIDDLE)
            barrier = threading.Barrier(CALLERS)

            def one(i: int) -> bytes:
                barrier.wait(5)  # all in flight together
                answer: bytes = call(b"x", timeout=_timeout(i),
                                     metadata=(("x-request-id", f"rid-{i}"),))
                return answer

            with futures.ThreadPoolExecutor(CALLERS) as pool:
                answers = list(pool.map(one, range(CALLERS)))
            channel.close()
        down.close()
    _check(answers)


def test_sync_explicit_shorter_timeout_wins_and_nothing_flows_outside_a_call() -> None:
    """Sync: a shorter explicit timeout wins; a call made outside any served call gets no
    deadline and a fresh request id of its own."""
    downstream = Downstream()
    with sync_server([downstream.handler()]) as down_target:
        down = resilient_channel(down_target, registry=CollectorRegistry())
        with sync_server([_middle_sync(down, 0.5)], _interceptors()) as target:
            with grpc.insecure_channel(target) as channel:
                answer = channel.unary_unary(MIDDLE)(
                    b"x", timeout=30, metadata=(("x-request-id", "rid-short"),))
        rid, remaining = _parse(answer)
        assert rid == "rid-short"
        assert remaining is not None and remaining <= 0.55  # 0.5 s, as rounded up on the wire
        assert propagation.inbound() is None
        rid, remaining = _parse(down.unary_unary(DOWN)(b"x"))
        assert remaining is None
        assert re.fullmatch(r"[0-9a-f]{32}", rid) and rid != "rid-short"
        down.close()


def test_sync_longer_explicit_timeout_is_capped_by_the_incoming_deadline() -> None:
    """Sync: an outbound timeout longer than the time left is cut to the time left."""
    downstream = Downstream()
    with sync_server([downstream.handler()]) as down_target:
        down = resilient_channel(down_target, registry=CollectorRegistry())
        with sync_server([_middle_sync(down, 60.0)], _interceptors()) as target:
            with grpc.insecure_channel(target) as channel:
                answer = channel.unary_unary(MIDDLE)(b"x", timeout=2.0)
        down.close()
    _rid, remaining = _parse(answer)
    assert remaining is not None and remaining <= 2.2  # 2 s, as rounded up on the wire


def _middle_aio(down: grpc.aio.Channel, explicit: float | None) -> grpc.GenericRpcHandler:
    call = down.unary_unary(DOWN)

    async def handle(request: bytes, context: Any) -> bytes:
        await asyncio.sleep(0)  # let the other callers' tasks interleave with this one
        answer: bytes = await call(request, timeout=explicit)
        return answer

    return grpc.method_handlers_generic_handler("test.Middle", {
        "Call": grpc.unary_unary_rpc_method_handler(handle)})


async def test_aio_deadline_and_request_id_flow_per_task_under_concurrency() -> None:
    """Aio: 8 concurrent two-hop calls on one loop; each downstream call gets its own."""
    downstream = Downstream()
    with sync_server([downstream.handler()]) as down_target:
        async with client_aio.resilient_channel(down_target,
                                                registry=CollectorRegistry()) as down:
            async with aio_server([_middle_aio(down, None)],
                                  server_aio.server_interceptors(logger=False,
                                                                 metrics=False)) as target:
                async with grpc.aio.insecure_channel(target) as channel:
                    call = channel.unary_unary(MIDDLE)
                    answers = await asyncio.gather(*(
                        call(b"x", timeout=_timeout(i), metadata=(("x-request-id", f"rid-{i}"),))
                        for i in range(CALLERS)))
            assert propagation.inbound() is None
    _check(list(answers))


async def test_aio_explicit_shorter_timeout_wins() -> None:
    """Aio: an explicit outbound timeout shorter than the time left is kept."""
    downstream = Downstream()
    with sync_server([downstream.handler()]) as down_target:
        async with client_aio.resilient_channel(down_target,
                                                registry=CollectorRegistry()) as down:
            async with aio_server([_middle_aio(down, 0.5)],
                                  server_aio.server_interceptors(logger=False,
                                                                 metrics=False)) as target:
                async with grpc.aio.insecure_channel(target) as channel:
                    answer = await channel.unary_unary(MIDDLE)(
                        b"x", timeout=30, metadata=(("x-request-id", "rid-a"),))
    rid, remaining = _parse(answer)
    assert rid == "rid-a"
    assert remaining is not None and remaining <= 0.55  # 0.5 s, as rounded up on the wire


def test_sync_call_without_deadline_passes_on_none() -> None:
    """Sync: a served call without a deadline (grpc reports ~9.2e18 s left) passes none on."""
    downstream = Downstream()
    with sync_server([downstream.handler()]) as down_target:
        down = resilient_channel(down_target, registry=CollectorRegistry())
        with sync_server([_middle_sync(down, None)], _interceptors()) as target:
            with grpc.insecure_channel(target) as channel:
                answer = channel.unary_unary(MIDDLE)(b"x", metadata=(("x-request-id", "r"),))
        down.close()
    assert _parse(answer) == ("r", None)
    # No deadline on the wire either: the sync server reports its "infinite" time left again.
    # (Before the fix the 9.2e18 s went on as a timeout and the outbound call failed.)
    (raw,) = downstream.raw
    assert raw is not None and raw > 1e9
