"""aio ``write()`` style through our interceptors: half-close known without grpc's private names.

grpc.aio asks the call our outermost interceptor returned whether the caller has half-closed;
our calls answer from the request stream they passed on. These tests fail if that answer is
wrong, or if a grpcio release stops asking (``write()`` after ``done_writing()`` would then
drop the message silently instead of raising).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc import aio
from prometheus_client import CollectorRegistry

from octollm_grpc.client import RetryPolicy
from octollm_grpc.client._aio_interceptors import aio_interceptors
from octollm_grpc.client._channel import AioClientOptions
from octollm_grpc.client._half_close import WatchedRequests, watch
from tests.client.channels import aio_channel
from tests.servers import sync_server

SERVICE = "test.HalfClose"
CLIENT_STREAM = f"/{SERVICE}/ClientStream"
BIDI = f"/{SERVICE}/Bidi"


class _Server:
    """Reads every request, says it saw the half-close, then waits to be released to answer."""

    def __init__(self) -> None:
        self.half_closed = threading.Event()
        self.release = threading.Event()
        self.received: list[list[bytes]] = []

    def _read(self, requests: Iterator[bytes]) -> list[bytes]:
        received = list(requests)
        self.received.append(received)
        self.half_closed.set()
        assert self.release.wait(10)
        return received

    def handler(self) -> grpc.GenericRpcHandler:
        def client_stream(requests: Iterator[bytes], context: Any) -> bytes:
            return b"%d" % len(self._read(requests))

        def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
            yield from self._read(requests)

        return grpc.method_handlers_generic_handler(SERVICE, {
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        })


async def _wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 10)


def _retry_layer_only(target: str, retry: RetryPolicy | None) -> aio.Channel:
    """The retry layer as the outermost interceptor (no observers above it)."""
    core, _ = AioClientOptions(target=target, retry=retry, budget=None, breaker=None,
                               clock=lambda: 0.0, registry=CollectorRegistry()).resilience()
    return aio.insecure_channel(target, [("grpc.enable_retries", 0)],
                                interceptors=aio_interceptors(core))


LAYERS = ["observed", "retry_layer_only"]
POLICIES = {"plain": RetryPolicy(), "replayable": RetryPolicy(replayable_requests=True)}


def _channel(layer: str, target: str, policy: str, clock: Any) -> aio.Channel:
    if layer == "observed":
        return aio_channel(target, clock, retry=POLICIES[policy])
    return _retry_layer_only(target, POLICIES[policy])


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("layer", LAYERS)
async def test_write_after_done_writing_raises_on_a_client_stream(
        layer: str, policy: str, clock: Any) -> None:
    """Client stream: write, write, done_writing; another write raises InvalidStateError."""
    server = _Server()
    with sync_server([server.handler()]) as target:
        async with _channel(layer, target, policy, clock) as channel:
            call = channel.stream_unary(CLIENT_STREAM)()
            await call.write(b"a")
            await call.write(b"b")
            await call.done_writing()
            await _wait_for(server.half_closed)
            with pytest.raises(asyncio.InvalidStateError, match="half closed"):
                await call.write(b"c")
            server.release.set()
            assert await call == b"2"
    assert server.received == [[b"a", b"b"]]


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("layer", LAYERS)
async def test_write_after_done_writing_raises_on_a_bidi_stream(
        layer: str, policy: str, clock: Any) -> None:
    """Bidi stream: the same, and the responses still arrive in full afterwards."""
    server = _Server()
    with sync_server([server.handler()]) as target:
        async with _channel(layer, target, policy, clock) as channel:
            call = channel.stream_stream(BIDI)()
            await call.write(b"x")
            await call.done_writing()
            await _wait_for(server.half_closed)
            with pytest.raises(asyncio.InvalidStateError, match="half closed"):
                await call.write(b"y")
            server.release.set()
            assert [m async for m in call] == [b"x"]
    assert server.received == [[b"x"]]


async def test_watch_marks_the_end_and_shares_a_watched_stream() -> None:
    """watch(): an async stream is wrapped once and ends marked; a sync one is left alone."""
    async def source() -> Any:
        yield 1
        yield 2

    stream, watcher = watch(source())
    assert isinstance(stream, WatchedRequests) and watcher is stream
    assert watch(stream) == (stream, stream)  # an inner interceptor shares it
    assert [item async for item in stream] == [1, 2]
    assert watcher.ended
    items = [1]
    assert watch(items) == (items, None)
    assert watch(None) == (None, None)
