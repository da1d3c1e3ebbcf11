"""A resilient channel sends one x-request-id for every attempt of a logical call."""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from octollm_grpc.server import server_interceptors
from octollm_grpc.testing import FakeClock
from tests.client.backend import FAIL, SERVER_STREAM, SUCCEED, UNARY, Backend, Reply
from tests.client.channels import aio_channel, sync_channel
from tests.servers import sync_server

_HEX32 = re.compile(r"[0-9a-f]{32}")


class IdBackend(Backend):
    """The scripted backend, also recording each attempt's x-request-id."""

    def __init__(self, script: list[Reply], clock: FakeClock) -> None:
        super().__init__(script, clock)
        self.request_ids: list[str | None] = []

    def _begin(self, method: str, context: Any, requests: list[bytes] | None = None) -> Reply:
        self.request_ids.append(dict(context.invocation_metadata()).get("x-request-id"))
        return super()._begin(method, context, requests)


def _call_sync(channel: grpc.Channel, method: str, **kwargs: Any) -> Any:
    if method == UNARY:
        return channel.unary_unary(method)(b"x", timeout=10, **kwargs)
    return list(channel.unary_stream(method)(b"x", timeout=10, **kwargs))


@pytest.mark.parametrize("method", [UNARY, SERVER_STREAM])
def test_sync_retries_of_one_call_carry_one_fresh_id(clock: FakeClock, method: str) -> None:
    """Sync: three attempts of one call share one generated id; the next call gets another."""
    backend = IdBackend([FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock)
        _call_sync(channel, method)
        backend.script = [SUCCEED]
        _call_sync(channel, method)
        channel.close()
    first, second, third, fourth = backend.request_ids
    assert first is not None and _HEX32.fullmatch(first)
    assert first == second == third
    assert fourth is not None and _HEX32.fullmatch(fourth) and fourth != first


@pytest.mark.parametrize("method", [UNARY, SERVER_STREAM])
async def test_aio_retries_of_one_call_carry_one_fresh_id(clock: FakeClock, method: str) -> None:
    """aio: the same, through grpc.aio's interceptors."""
    backend = IdBackend([FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        channel = aio_channel(target, clock)
        if method == UNARY:
            await channel.unary_unary(method)(b"x", timeout=10)
        else:
            [m async for m in channel.unary_stream(method)(b"x", timeout=10)]
        await channel.close()
    assert len(backend.request_ids) == 3
    assert backend.request_ids[0] is not None and _HEX32.fullmatch(backend.request_ids[0])
    assert len(set(backend.request_ids)) == 1


def test_callers_own_id_is_kept_for_every_attempt(clock: FakeClock) -> None:
    """A caller that sets x-request-id itself keeps it on every attempt."""
    backend = IdBackend([FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock)
        channel.unary_unary(UNARY)(b"x", timeout=10, metadata=(("x-request-id", "mine-1"),))
        channel.close()
    assert backend.request_ids == ["mine-1", "mine-1"]


def test_servers_log_lines_of_one_call_join_on_its_id(clock: FakeClock) -> None:
    """The server stack logs each failed attempt with the id the client sent: one id."""
    backend = IdBackend([FAIL, FAIL, SUCCEED], clock)
    with capture_logs() as logs, sync_server(
            [backend.handler()], server_interceptors(metrics=False)) as target:
        channel = sync_channel(target, clock)
        channel.unary_unary(UNARY)(b"x", timeout=10)
        channel.close()
    failed = [event for event in logs if event["event"] == "grpc.call.failed"]
    assert len(failed) == 2
    assert {event["request_id"] for event in failed} == {backend.request_ids[0]}
