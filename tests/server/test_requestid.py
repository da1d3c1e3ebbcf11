"""Request ids: in from the caller or generated, out in trailers, RequestInfo and every log."""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest
import structlog
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.server import (
    BearerAuth,
    RequestIds,
    ServerOptions,
    current_request_id,
    server_interceptors,
)
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server._core import Call, Pipeline, SyncCall
from octollm_grpc.status import from_rpc_error
from tests.server.harness import Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _log_step(context: Any) -> None:
    structlog.get_logger("handler").info("handler.step")


def test_generated_id_is_the_same_everywhere() -> None:
    """No incoming id: one is generated and is the same in trailer, RequestInfo and log."""
    script = Script(error=lambda: e.TaskNotFoundError("t"))
    with capture_logs() as logs, sync_server(sync_handlers(script),
                                             server_interceptors(metrics=False)) as target:
        outcome = call_sync(target, "unary")
    rid = outcome.trailers["x-request-id"]
    assert HEX32.match(rid)
    assert outcome.error is not None
    assert from_rpc_error(outcome.error).request_id == rid
    assert logs[0]["request_id"] == rid


@pytest.mark.parametrize("incoming", ["x" * 129, "bad\nline", "caf\u00e9", ""])
def test_unsafe_incoming_id_is_replaced(incoming: str) -> None:
    """An incoming id that is too long, empty, non-ASCII or unprintable is replaced."""
    ids = RequestIds()
    assert HEX32.match(ids.from_metadata([("x-request-id", incoming)]))
    assert ids.from_metadata([("x-request-id", "ok-id_1")]) == "ok-id_1"


def test_untrusted_incoming_and_custom_header() -> None:
    """trust_incoming=False ignores the caller's id; a custom header and generator are used."""
    ids = RequestIds(header="x-correlation-id", generate=lambda: "gen-1", trust_incoming=False)
    assert ids.from_metadata([("x-correlation-id", "theirs")]) == "gen-1"
    with pytest.raises(ValueError):
        RequestIds(header="X-Upper")
    with pytest.raises(ValueError):
        RequestIds(header="x-id-bin")


def test_custom_header_goes_out_in_trailers() -> None:
    """A configured header is read from the call and written to the trailers."""
    interceptors = server_interceptors(
        metrics=False, request_ids=RequestIds(header="x-correlation-id"))
    with sync_server(sync_handlers(Script()), interceptors) as target:
        outcome = call_sync(target, "unary", [("x-correlation-id", "corr-9")])
    assert outcome.trailers["x-correlation-id"] == "corr-9"
    assert "x-request-id" not in outcome.trailers


def test_sync_handler_log_events_carry_the_id() -> None:
    """Sync: every event the handler logs has its own call's id (one worker thread, two calls)."""
    script = Script(before=_log_step)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs, \
            sync_server(sync_handlers(script), server_interceptors(metrics=False),
                        workers=1) as target:
        call_sync(target, "server_stream", [("x-request-id", "first")])
        second = call_sync(target, "unary")
    steps = [x for x in logs if x["event"] == "handler.step"]
    assert [x["request_id"] for x in steps] == ["first", second.trailers["x-request-id"]]


class _Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata
        self.trailers: Any = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def set_trailing_metadata(self, trailers: Any) -> None:
        self.trailers = trailers


def test_call_state_is_unbound_when_the_call_ends() -> None:
    """The id is bound (ours and structlog's) during the call and unbound after it."""
    pipeline = Pipeline(ServerOptions(metrics=False))
    plan = pipeline.plan("/a.B/C", "unary")
    context = _Context((("x-request-id", "r-1"),))
    call = Call.begin(pipeline, plan, context, b"")
    assert current_request_id() == "r-1"
    assert structlog.contextvars.get_contextvars()["request_id"] == "r-1"
    assert context.trailers == (("x-request-id", "r-1"),)
    pipeline.end(call)
    assert current_request_id() is None
    assert "request_id" not in structlog.contextvars.get_contextvars()


def test_call_state_is_unbound_when_admission_is_interrupted() -> None:
    """A BaseException from a verifier (e.g. KeyboardInterrupt) skips the handler and still
    unbinds the call's id."""

    def verify(token: str) -> list[str]:
        raise KeyboardInterrupt

    pipeline = Pipeline(ServerOptions(metrics=False, auth=BearerAuth(verify)))
    plan = pipeline.plan("/a.B/C", "unary")
    context = _Context((("x-request-id", "r-2"), ("authorization", "Bearer t")))
    ran: list[bool] = []
    with pytest.raises(KeyboardInterrupt), SyncCall.begin(pipeline, plan, context, b""):
        ran.append(True)
    assert ran == []
    assert context.trailers == (("x-request-id", "r-2"),)
    assert current_request_id() is None
    assert "request_id" not in structlog.contextvars.get_contextvars()


async def test_aio_handler_log_events_carry_the_id() -> None:
    """aio: events the handler logs, and the failure event, have the call's id."""
    script = Script(before=_log_step, error=lambda: e.CacheError("cold"))
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with aio_server(aio_handlers(script),
                              server_aio.server_interceptors(metrics=False)) as target:
            await call_aio(target, "bidi_stream", [("x-request-id", "aio-1")])
    assert [(x["event"], x["request_id"]) for x in logs] == [
        ("handler.step", "aio-1"), ("grpc.call.failed", "aio-1")]


def test_request_ids_off() -> None:
    """request_ids=False: no trailer, no RequestInfo; errors are still mapped."""
    script = Script(error=lambda: e.TaskNotFoundError("t"))
    with sync_server(sync_handlers(script),
                     server_interceptors(metrics=False, request_ids=False)) as target:
        outcome = call_sync(target, "unary", [("x-request-id", "ignored")])
    assert "x-request-id" not in outcome.trailers
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert from_rpc_error(outcome.error).request_id is None
