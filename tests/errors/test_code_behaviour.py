"""The one table of code behaviour (codes.CODE_BEHAVIOUR): all 17 status codes walked through
every consumer (the gRPC client's retry on both stacks against a real server, resilience.retry,
the channel breaker, the server's log level, the catalog) agree with it."""

from __future__ import annotations

import contextlib
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import codes
from octollm_grpc import errors as e
from octollm_grpc.client import BreakerSettings
from octollm_grpc.observability._logs import FAILED_EVENT
from octollm_grpc.resilience import retry
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._limits import PUSHBACK_KEY
from octollm_grpc.testing import FakeClock
from tests.client.backend import OK, SUCCEED, UNARY, Backend, Reply
from tests.client.channels import aio_channel, sync_channel
from tests.servers import aio_server, sync_server

_C = grpc.StatusCode
ROWS = codes.CODE_BEHAVIOUR
PUSHBACK = ((PUSHBACK_KEY, "1"),)  # the server says: retry after 1 ms


def _script(backend: Backend, code: grpc.StatusCode, pushback: bool) -> None:
    backend.attempts.clear()
    first = SUCCEED if code is OK else Reply(code, messages=0,
                                               trailers=PUSHBACK if pushback else ())
    backend.script = [first, SUCCEED]


def _expected_attempts(row: codes.CodeBehaviour, pushback: bool) -> int:
    if row.code is OK:
        return 1
    retried = row.pushback_honoured if pushback else row.client_retry
    return 2 if retried else 1


@pytest.mark.parametrize("pushback", [False, True], ids=["plain", "pushback"])
def test_sync_client_retries_exactly_the_codes_the_table_says(pushback: bool) -> None:
    """Sync resilient channel, default policy, real server: each code's attempts per the table."""
    backend, clock = Backend([SUCCEED]), FakeClock()
    attempts: dict[grpc.StatusCode, int] = {}
    ended: dict[grpc.StatusCode, grpc.StatusCode] = {}
    with sync_server([backend.handler()]) as target, sync_channel(target, clock) as channel:
        for row in ROWS:
            _script(backend, row.code, pushback)
            try:
                channel.unary_unary(UNARY)(b"x", timeout=10)
            except e.OctoLLMError as error:
                ended[row.code] = error.code()
            attempts[row.code] = len(backend.attempts)
    assert attempts == {row.code: _expected_attempts(row, pushback) for row in ROWS}
    assert all(code is ended_with for code, ended_with in ended.items())


@pytest.mark.parametrize("pushback", [False, True], ids=["plain", "pushback"])
async def test_aio_client_retries_exactly_the_codes_the_table_says(pushback: bool) -> None:
    """aio resilient channel, default policy, real server: each code's attempts per the table."""
    backend, clock = Backend([SUCCEED]), FakeClock()
    attempts: dict[grpc.StatusCode, int] = {}
    ended: dict[grpc.StatusCode, grpc.StatusCode] = {}
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock) as channel:
            for row in ROWS:
                _script(backend, row.code, pushback)
                try:
                    await channel.unary_unary(UNARY)(b"x", timeout=10)
                except e.OctoLLMError as error:
                    ended[row.code] = error.code()
                attempts[row.code] = len(backend.attempts)
    assert attempts == {row.code: _expected_attempts(row, pushback) for row in ROWS}
    assert all(code is ended_with for code, ended_with in ended.items())


def _decoded_errors() -> dict[grpc.StatusCode, e.OctoLLMError]:
    """The typed error a client decodes for each non-OK code, from a real server."""
    backend = Backend([SUCCEED])
    found: dict[grpc.StatusCode, e.OctoLLMError] = {}
    with sync_server([backend.handler()]) as target, grpc.insecure_channel(target) as channel:
        for row in ROWS[1:]:
            _script(backend, row.code, False)
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary(UNARY)(b"x", timeout=10)
            found[row.code] = from_rpc_error(raised.value)
    return found


def test_resilience_retry_retries_exactly_the_codes_the_table_says() -> None:
    """resilience.retry on the error decoded for each code: retried iff helper_retry."""
    calls: dict[grpc.StatusCode, int] = {}
    for code, error in _decoded_errors().items():
        assert error.code() is code
        count = 0

        @retry(max_retries=1, base_delay=0, sleep=lambda _s: None)
        def fails_once(error: e.OctoLLMError = error) -> str:
            nonlocal count
            count += 1
            if count == 1:
                raise error
            return "ok"

        with contextlib.suppress(e.OctoLLMError):
            fails_once()
        calls[code] = count
    assert calls == {row.code: 2 if row.helper_retry else 1 for row in ROWS[1:]}
    assert codes.behaviour(_C.OK).helper_retry is False  # nothing raised, nothing retried


@pytest.mark.parametrize("stack", ["sync", "aio"])
async def test_channel_breaker_counts_exactly_the_codes_the_table_says(stack: str) -> None:
    """A breaker that trips on one failure, over a real server: it opens iff breaker_failure."""
    backend, clock = Backend([SUCCEED]), FakeClock()
    opened: dict[grpc.StatusCode, bool] = {}
    ended: dict[grpc.StatusCode, grpc.StatusCode] = {}
    settings = BreakerSettings(failure_threshold=1)
    with sync_server([backend.handler()]) as target:
        for row in ROWS:
            _script(backend, row.code, False)
            backend.script = [backend.script[0]]  # the same reply every time
            # A fresh registry per code: a fresh shared breaker, closed.
            keywords: dict[str, Any] = {"breaker": settings, "retry": None,
                                        "registry": CollectorRegistry()}
            for _ in range(2):
                try:
                    if stack == "sync":
                        with sync_channel(target, clock, **keywords) as channel:
                            channel.unary_unary(UNARY)(b"x", timeout=10)
                    else:
                        async with aio_channel(target, clock, **keywords) as channel:
                            await channel.unary_unary(UNARY)(b"x", timeout=10)
                except e.CircuitOpenError:
                    pass
                except e.OctoLLMError as error:
                    ended[row.code] = error.code()
            # Open: the second call failed fast and never reached the server.
            opened[row.code] = len(backend.attempts) == 1
    assert opened == {row.code: row.breaker_failure for row in ROWS}
    assert all(code is ended_with for code, ended_with in ended.items())


def _abort_handler(codes_by_method: dict[str, grpc.StatusCode]) -> grpc.GenericRpcHandler:
    def make(code: grpc.StatusCode) -> Any:
        def handler(request: bytes, context: Any) -> bytes:
            if code is not OK:
                context.abort(code, "decided by the handler")
            return b"ok"
        return handler

    return grpc.method_handlers_generic_handler("test.Codes", {
        name: grpc.unary_unary_rpc_method_handler(make(code))
        for name, code in codes_by_method.items()})


def _raise_handler(aio: bool) -> grpc.GenericRpcHandler:
    # Each method raises the class a bare status of its code decodes to.
    def make(code: grpc.StatusCode) -> Any:
        cls = codes.class_for_status_code(code)

        def handler(request: bytes, context: Any) -> bytes:
            raise cls.restore("raised", None, {}, None)

        async def aio_handler(request: bytes, context: Any) -> bytes:
            raise cls.restore("raised", None, {}, None)

        return aio_handler if aio else handler

    return grpc.method_handlers_generic_handler("test.Raise", {
        row.code.name: grpc.unary_unary_rpc_method_handler(make(row.code)) for row in ROWS[1:]
        if codes.mapping_for_class(codes.class_for_status_code(row.code)).grpc_code is row.code})


def _levels(logs: list[dict[str, Any]]) -> dict[str, str]:
    return {event["grpc_method"]: event["log_level"] for event in logs
            if event["event"] == FAILED_EVENT}


@pytest.mark.parametrize("stack", ["sync", "aio"])
async def test_server_logs_each_code_at_the_tables_level(stack: str) -> None:
    """A handler's own abort and a raised error of each code log at the table's level."""
    by_method = {row.code.name: row.code for row in ROWS}
    handlers = [_abort_handler(by_method), _raise_handler(stack == "aio")]
    raised_codes = [row.code for row in ROWS[1:]
                    if codes.mapping_for_class(codes.class_for_status_code(row.code)).grpc_code
                    is row.code]
    paths = [f"/test.Codes/{name}" for name in by_method]
    paths += [f"/test.Raise/{code.name}" for code in raised_codes]
    with capture_logs() as logs:
        if stack == "sync":
            with sync_server(handlers, server_interceptors()) as target, \
                    grpc.insecure_channel(target) as channel:
                for path in paths:
                    with contextlib.suppress(grpc.RpcError):
                        channel.unary_unary(path)(b"x", timeout=10)
        else:
            async with aio_server(handlers, server_aio.server_interceptors()) as target, \
                    grpc.aio.insecure_channel(target) as channel:
                for path in paths:
                    with contextlib.suppress(grpc.RpcError):
                        await channel.unary_unary(path)(b"x", timeout=10)
    levels = _levels(logs)
    expected = {f"/test.Codes/{row.code.name}": row.level for row in ROWS[1:]}
    expected.update({f"/test.Raise/{code.name}": codes.behaviour(code).level
                     for code in raised_codes})
    assert levels == expected
    assert "/test.Codes/OK" not in levels  # success: no event


