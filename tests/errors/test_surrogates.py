"""Lone surrogates (text that is not valid UTF-8) in an error's details reach the caller.

Python strings may hold lone surrogates (``"\\udcff"`` from ``surrogateescape``-decoded bytes,
a broken JSON body); protobuf refuses to serialize them. The error must still go out with its
own code, with ``?`` in place of each surrogate, not as ``INTERNAL``.
"""

from __future__ import annotations

import grpc
import pytest

from octollm_grpc import errors as e
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.status import from_rpc_error, to_status
from tests.servers import aio_server, sync_server

SERVICE = "test.Surrogates"
METHOD = f"/{SERVICE}/Fail"


def _error() -> e.ValidationError:
    return e.ValidationError("bad \udcff byte", field="na\ud800me",
                             details={"k\udfff": "v\udcff", "list": ["\ud800"], "n": 1})


@pytest.mark.parametrize("details", [
    {"field": "x\ud800"},  # string keys and values only (the flat path)
    {"k\ud800": "v"},
    {"nested": {"deep": ["\udcff"]}, "n": 2},  # the general path
])
def test_to_status_replaces_lone_surrogates_in_details(details: dict[str, object]) -> None:
    """to_status() encodes details holding lone surrogates, with '?' for each of them."""
    sent = to_status(e.ValidationError("bad", details=details))
    assert sent.code is grpc.StatusCode.INVALID_ARGUMENT
    assert sent.details == "bad"
    encoded = repr(sent.proto)
    assert "\\ud800" not in encoded and "\\udcff" not in encoded
    info = sent.proto.details[0]
    assert info.type_url.endswith("google.rpc.ErrorInfo")


def _handler(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise _error()


async def _aio_handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise _error()


def _check(error: e.OctoLLMError) -> None:
    assert isinstance(error, e.ValidationError)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "bad ? byte"
    assert error.details["k?"] == "v?"
    assert error.details["list"] == ["?"]
    assert error.details["field"] == "na?me"


def test_sync_server_answers_the_real_error_not_internal() -> None:
    """Sync server: a handler's error with lone surrogates reaches the caller as that error."""
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Fail": grpc.unary_unary_rpc_method_handler(_handler)})
    with sync_server([handler], server_interceptors()) as target, \
            grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(METHOD)(b"x", timeout=10)
    _check(from_rpc_error(caught.value))


async def test_aio_server_answers_the_real_error_not_internal() -> None:
    """Aio server: a handler's error with lone surrogates reaches the caller as that error."""
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Fail": grpc.unary_unary_rpc_method_handler(_aio_handler)})
    async with aio_server([handler], server_aio.server_interceptors()) as target, \
            grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(METHOD)(b"x", timeout=10)
    _check(from_rpc_error(caught.value))
