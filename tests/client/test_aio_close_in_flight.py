"""Closing an aio resilient channel while a streaming call is in flight.

grpc.aio runs ``code()`` of the call our outermost interceptor returns as a task once the
caller writes; on close, grpcio (1.66 at least) inspects every pending task and raises
``InternalError("Unrecognized call object")`` when a task's own frame belongs to a call object it
does not know. Our call objects hand grpc's own ``code()`` coroutine on instead of wrapping it,
so closing a channel with calls in flight cancels them cleanly on every supported grpcio.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc import aio

from octollm_grpc import errors
from octollm_grpc.client import RetryPolicy
from tests.client.channels import aio_channel
from tests.client.test_public_api_half_close import BIDI, CLIENT_STREAM, _retry_layer_only, _Server
from tests.servers import sync_server

POLICIES = {"plain": RetryPolicy(), "replayable": RetryPolicy(replayable_requests=True)}


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("layer", ["observed", "retry_layer_only"])
@pytest.mark.parametrize("method", [CLIENT_STREAM, BIDI])
async def test_close_with_a_stream_in_flight_cancels_it(
        method: str, layer: str, policy: str, clock: object) -> None:
    """The channel closes without InternalError; the call in flight is cancelled."""
    server = _Server()
    with sync_server([server.handler()]) as target:
        channel = (aio_channel(target, clock, retry=POLICIES[policy]) if layer == "observed"
                   else _retry_layer_only(target, POLICIES[policy]))
        call = (channel.stream_unary(method)() if method == CLIENT_STREAM
                else channel.stream_stream(method)())
        await call.write(b"x")  # grpc.aio now runs call.code() as a task
        await call.done_writing()
        await channel.close()  # raised InternalError on grpcio 1.66 before the fix
        server.release.set()
        # Newer grpcio: awaiting a call its channel's close cancelled raises CancelledError;
        # older: the call's CANCELLED status.
        with pytest.raises((asyncio.CancelledError, aio.AioRpcError,
                            errors.OctoLLMError)) as caught:
            await _finish(call, method)
        if not isinstance(caught.value, asyncio.CancelledError):
            assert caught.value.code() is grpc.StatusCode.CANCELLED


async def _finish(call: Any, method: str) -> Any:
    if method == CLIENT_STREAM:
        return await call
    return [m async for m in call]
