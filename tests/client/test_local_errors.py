"""grpc's own local failures come out of a resilient aio channel typed, never as grpc internals.

grpc.aio raises an exception of its own (not a ``grpc.RpcError``) when a metadata key or value
has bytes HTTP/2 cannot carry; through a resilient channel it escaped untyped, and a gateway
passing a caller's header on answered 500 with a ``critical`` traceback.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from octollm_grpc import errors
from octollm_grpc.client import BreakerSettings, RetryPolicy
from octollm_grpc.client._local_errors import LOCAL_ERROR_MESSAGE, local_error
from octollm_grpc.testing import FakeClock
from tests.client.channels import aio_channel
from tests.servers import aio_server

UNARY = "/test.Local/Unary"
STREAM = "/test.Local/Stream"
BAD_METADATA = [
    (("authorization", "Bearer \x01abc"),),
    (("authorization", "Bearer caf\u00e9"),),
    (("Bad Key", "value"),),
]


def _handlers() -> grpc.GenericRpcHandler:
    async def unary(request: bytes, context: Any) -> bytes:
        return request

    async def stream(request: bytes, context: Any) -> Any:
        yield request
        yield request

    return grpc.method_handlers_generic_handler("test.Local", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    })


@pytest.mark.parametrize("metadata", BAD_METADATA)
async def test_unsendable_metadata_is_invalid_input_not_retried_no_breaker_verdict(
        metadata: Any, clock: FakeClock) -> None:
    """Unary and response-stream calls with metadata grpc refuses: InvalidInputError with our
    message, one attempt, and the breaker (threshold 1) stays closed for the next call."""
    async with aio_server([_handlers()]) as target:
        channel = aio_channel(target, clock, retry=RetryPolicy(max_attempts=3),
                              breaker=BreakerSettings(failure_threshold=1))
        try:
            for _ in range(3):
                with pytest.raises(errors.InvalidInputError) as raised:
                    await channel.unary_unary(UNARY)(b"x", metadata=metadata, timeout=5)
                assert raised.value.message == LOCAL_ERROR_MESSAGE
                assert raised.value.details["grpc_error"] == "ExecuteBatchError"
                with pytest.raises(errors.InvalidInputError):
                    async for _ in channel.unary_stream(STREAM)(b"x", metadata=metadata,
                                                                timeout=5):
                        pass
            assert clock.sleeps == []  # not retried: no backoff was waited
            assert await channel.unary_unary(UNARY)(b"ok", timeout=5) == b"ok"
        finally:
            await channel.close()


def test_only_grpc_s_own_exceptions_are_translated() -> None:
    """A status error, a cancellation or a caller's bug passes through untouched."""
    assert local_error(ValueError("bug")) is None
    assert local_error(errors.InternalError("x")) is None
    assert local_error(KeyboardInterrupt()) is None
