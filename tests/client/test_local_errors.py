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
    """Unary and response-stream calls with metadata HTTP/2 cannot carry: InvalidInputError
    with our message, no attempt, and the breaker (threshold 1) stays closed for the next call
    (on grpcio 1.66 the stream waited for its deadline)."""
    async with aio_server([_handlers()]) as target:
        channel = aio_channel(target, clock, retry=RetryPolicy(max_attempts=3),
                              breaker=BreakerSettings(failure_threshold=1))
        try:
            for _ in range(3):
                with pytest.raises(errors.InvalidInputError) as raised:
                    await channel.unary_unary(UNARY)(b"x", metadata=metadata, timeout=5)
                assert raised.value.message == LOCAL_ERROR_MESSAGE
                # Refused before grpc sees it: every grpcio version answers alike.
                assert raised.value.details["grpc_error"] == "InvalidMetadata"
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


@pytest.mark.parametrize(("metadata", "refused"), [
    ((("authorization", "Bearer ok-token"), ("x-request-id", "r-1")), False),
    ((("trace-bin", b"\x00\x01\xff"),), False),
    ((("authorization", "Bearer \x7f"),), True),
    ((("x-note", b"bytes where text goes"),), True),
    ((("", "empty key"),), True),
    ((("UPPER", "v"),), True),
])
def test_metadata_is_checked_as_http2_carries_it(metadata: Any, refused: bool) -> None:
    """Keys are lower-case token characters; text values printable ASCII; -bin values any bytes."""
    from octollm_grpc.client._local_errors import refused_metadata

    error = refused_metadata(metadata)
    assert (error is not None) is refused
    if error is not None:
        assert isinstance(error, errors.InvalidInputError)
        assert error.message == LOCAL_ERROR_MESSAGE


def test_a_key_checked_before_still_has_its_value_checked() -> None:
    """The memo of checked keys skips only the key's check: a bad value under a key seen
    before is refused, a -bin key seen before still takes any bytes, and the memo is bounded."""
    from octollm_grpc.client import _local_errors
    from octollm_grpc.client._local_errors import refused_metadata

    assert refused_metadata((("x-memo", "fine"), ("memo-bin", b"\x00"))) is None
    assert refused_metadata((("x-memo", "fine"), ("memo-bin", b"\xff\x01"))) is None
    assert refused_metadata((("x-memo", "bad\x01"),)) is not None
    assert refused_metadata((("x-memo", b"bytes"),)) is not None
    for index in range(2 * _local_errors._MAX_CHECKED_KEYS):
        assert refused_metadata(((f"k{index}", "v"),)) is None
    assert len(_local_errors._CHECKED_KEYS) <= _local_errors._MAX_CHECKED_KEYS
    assert refused_metadata((("k1999", "\x7f"),)) is not None
    assert refused_metadata((("K1999", "v"),)) is not None
