"""A peer's CIRCUIT_OPEN status is told apart from our own breaker's CircuitOpenError."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc.client import BreakerSettings
from octollm_grpc.client._breaker import ChannelBreakers as CircuitBreakers
from octollm_grpc.http import to_http
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.testing import FakeClock
from tests.client.channels import aio_channel, sync_channel
from tests.servers import aio_server, sync_server

METHOD = "/test.Peer/Run"


def _handler(aio: bool) -> grpc.GenericRpcHandler:
    def run(request: bytes, context: Any) -> bytes:
        raise errors.CircuitOpenError("their-backend", 12.5)

    async def run_aio(request: bytes, context: Any) -> bytes:
        run(request, context)
        return b""

    return grpc.method_handlers_generic_handler("test.Peer", {
        "Run": grpc.unary_unary_rpc_method_handler(run_aio if aio else run)})


def _assert_peers(error: errors.OctoLLMError) -> None:
    assert not isinstance(error, errors.CircuitOpenError)
    assert type(error) is errors.ResourceError
    assert error.error_code == "CIRCUIT_OPEN"
    assert error.retry_after == 12.5
    assert error.details["target"] == "their-backend"
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error.trailing_metadata() is not None
    http = to_http(error)
    assert (http.status, http.body["error"], http.headers["Retry-After"]) == (
        503, "CIRCUIT_OPEN", "13")


def _breakers(target: str, clock: FakeClock) -> CircuitBreakers:
    return CircuitBreakers(target, BreakerSettings(failure_threshold=1, reset_timeout=30),
                           clock=clock.now, registry=CollectorRegistry())


def test_sync_a_peers_circuit_open_is_not_ours_and_ours_still_is() -> None:
    """Sync: the server's CIRCUIT_OPEN decodes as ResourceError; our open breaker's is ours."""
    clock = FakeClock()
    with sync_server([_handler(aio=False)], interceptors=server_interceptors()) as target:
        channel = sync_channel(target, clock, breaker=_breakers(target, clock), retry=None)
        call = channel.unary_unary(METHOD)
        with pytest.raises(errors.ResourceError) as peer:
            call(b"")
        _assert_peers(peer.value)
        # UNAVAILABLE counted: our breaker (threshold 1) is open now, and says so itself.
        with pytest.raises(errors.CircuitOpenError) as ours:
            call(b"")
        assert ours.value.trailing_metadata() is None
        assert ours.value.retry_after == 30
        channel.close()


async def test_aio_a_peers_circuit_open_is_not_ours_and_ours_still_is() -> None:
    """grpc.aio: the same distinction, from an aio server."""
    clock = FakeClock()
    async with aio_server([_handler(aio=True)],
                          interceptors=server_aio.server_interceptors()) as target:
        async with aio_channel(target, clock, breaker=_breakers(target, clock),
                               retry=None) as channel:
            call = channel.unary_unary(METHOD)
            with pytest.raises(errors.ResourceError) as peer:
                await call(b"")
            _assert_peers(peer.value)
            with pytest.raises(errors.CircuitOpenError) as ours:
                await call(b"")
            assert ours.value.trailing_metadata() is None
