"""Every error raised in a real server handler comes back equal in a real client, sync and aio."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from octollm_grpc import codes
from octollm_grpc import errors as e
from octollm_grpc.status import from_rpc_error, to_status
from octollm_grpc.status._limits import DETAILS_KEY, GENERIC_MESSAGE, PUSHBACK_KEY
from tests.errors.samples import SAMPLES
from tests.servers import aio_server, sync_server

METHOD = "/test.Errors/Raise"


def _sync_handlers(raised: list[BaseException]) -> list[grpc.GenericRpcHandler]:
    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort_with_status(to_status(raised[0], request_id="req-1"))
        raise AssertionError("abort_with_status returned")

    return [grpc.method_handlers_generic_handler(
        "test.Errors", {"Raise": grpc.unary_unary_rpc_method_handler(handler)})]


def _aio_handlers(raised: list[BaseException]) -> list[grpc.GenericRpcHandler]:
    async def handler(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        status = to_status(raised[0], request_id="req-1")
        await context.abort(status.code, status.details, status.trailing_metadata)

    return [grpc.method_handlers_generic_handler(
        "test.Errors", {"Raise": grpc.unary_unary_rpc_method_handler(handler)})]


def _assert_equal(got: e.OctoLLMError, sent: e.OctoLLMError) -> None:
    if isinstance(sent, e.CircuitOpenError):
        # A peer's CIRCUIT_OPEN is never our own breaker's error: its parent class, all kept.
        assert type(got) is e.ResourceError
    else:
        assert type(got) is type(sent)
        assert got == sent
    assert (got.message, got.error_code, dict(got.details), got.retry_after) == (
        sent.message, sent.error_code, dict(sent.details), sent.retry_after)
    assert got.code() is codes.mapping_for(sent).grpc_code
    assert got.details() == sent.message
    assert got.request_id == "req-1"


def test_every_class_has_a_sample() -> None:
    """The round-trip samples cover every registered class of the hierarchy."""
    builtin = {cls for cls, _ in codes.registered() if cls.__module__ == e.__name__}
    assert {type(s) for s in SAMPLES} == builtin


def test_roundtrip_sync() -> None:
    """Sync server -> sync client: class, message, error_code, details, retry_after survive."""
    raised: list[BaseException] = [SAMPLES[0]]
    with sync_server(_sync_handlers(raised)) as target, grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        for sample in SAMPLES:
            raised[0] = sample
            with pytest.raises(grpc.RpcError) as info:
                call(b"")
            # grpcio-status's own decoder accepts the status: code and message agree.
            proto = rpc_status.from_call(info.value)  # type: ignore[arg-type]
            assert proto is not None and proto.message == sample.message
            _assert_equal(from_rpc_error(info.value), sample)


async def test_roundtrip_aio() -> None:
    """aio server -> aio client: class, message, error_code, details, retry_after survive."""
    raised: list[BaseException] = [SAMPLES[0]]
    async with aio_server(_aio_handlers(raised)) as target:
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(METHOD)
            for sample in SAMPLES:
                raised[0] = sample
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(b"")
                got = from_rpc_error(info.value)
                _assert_equal(got, sample)
                assert got.trailing_metadata() is info.value.trailing_metadata()


def test_unexpected_exception_leaks_nothing() -> None:
    """A bug becomes INTERNAL with the generic message; its text is nowhere on the wire."""
    raised: list[BaseException] = [RuntimeError("secret password=hunter2")]
    with sync_server(_sync_handlers(raised)) as target, grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(METHOD)(b"")
    err = info.value
    assert err.code() is grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert err.details() == GENERIC_MESSAGE  # type: ignore[attr-defined]
    raw = b"".join(v if isinstance(v, bytes) else v.encode()
                   for _, v in err.trailing_metadata())  # type: ignore[attr-defined]
    assert b"hunter2" not in raw and b"RuntimeError" not in raw
    got = from_rpc_error(err)
    assert type(got) is e.InternalError and got.error_code == "INTERNAL_ERROR"


def test_builtin_timeout_maps_to_deadline_exceeded() -> None:
    """Python's TimeoutError reaches the client as DEADLINE_EXCEEDED / TIMEOUT_ERROR."""
    raised: list[BaseException] = [TimeoutError("db pool wait 5s at 10.0.0.3")]
    with sync_server(_sync_handlers(raised)) as target, grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(METHOD)(b"")
    got = from_rpc_error(info.value)
    assert got.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert type(got) is e.TimeoutError and "10.0.0.3" not in got.message


def test_pushback_trailer_for_retry_after() -> None:
    """An error with retry_after also sends grpc-retry-pushback-ms, in whole milliseconds."""
    raised: list[BaseException] = [e.RateLimitError(10, 1, retry_after=0.3)]
    with sync_server(_sync_handlers(raised)) as target, grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(METHOD)(b"")
    trailers = dict(info.value.trailing_metadata())  # type: ignore[attr-defined]
    assert trailers[PUSHBACK_KEY] == "300"
    assert DETAILS_KEY in trailers


def test_large_errors_fit_the_metadata_limit() -> None:
    """Huge details and messages are shortened to fit 8 KiB of trailers, never lost whole."""
    def violations(n: int) -> e.ValidationErrors:
        return e.ValidationErrors([{"field": f"items[{i}].name", "message": "must not be blank"}
                                   for i in range(n)])

    assert from_rpc_error(_raise_and_catch(violations(40))) == violations(40)  # fits whole
    got = from_rpc_error(_raise_and_catch(violations(5000)))
    assert type(got) is e.ValidationErrors and got.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert got.message == "Validation failed with 5000 errors"
    assert 0 < len(got.errors) < 5000 and got.details["_truncated"] is True

    got = from_rpc_error(_raise_and_catch(e.ExternalError("é" * 50_000,
                                                          details={"blob": "x" * 100_000})))
    assert type(got) is e.ExternalError and got.code() is grpc.StatusCode.UNAVAILABLE
    assert got.message.endswith("...") and len(got.message.encode()) <= 1024
    assert got.details["_truncated"] is True


def _raise_and_catch(sent: BaseException) -> grpc.RpcError:
    raised: list[BaseException] = [sent]
    with sync_server(_sync_handlers(raised)) as target, grpc.insecure_channel(target) as ch:
        try:
            ch.unary_unary(METHOD)(b"")
        except grpc.RpcError as err:
            return err
    raise AssertionError("the call succeeded")
