"""Stack options and safety nets: domain, debug, plain handlers on aio, broken errors and logs."""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.server import CallLogger, server_interceptors
from octollm_grpc.server import aio as server_aio
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._limits import GENERIC_MESSAGE
from tests.server.harness import Script, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server


def _detail(err: Any, name: str, message: Any) -> Any:
    decoded = from_rpc_error(err)
    packed = next(d for d in decoded.rich_status.details if d.type_url.endswith(name))
    packed.Unpack(message)
    return message


def test_domain_and_debug_are_passed_to_the_encoder() -> None:
    """domain= sets ErrorInfo.domain; debug=True adds DebugInfo (development only)."""
    script = Script(error=lambda: RuntimeError("visible only in debug"))
    with sync_server(sync_handlers(script), server_interceptors(
            metrics=False, domain="tasks.example.com", debug=True)) as target:
        outcome = call_sync(target, "unary")
    assert outcome.error is not None
    info = _detail(outcome.error, "ErrorInfo", error_details_pb2.ErrorInfo())
    assert info.domain == "tasks.example.com"
    debug = _detail(outcome.error, "DebugInfo", error_details_pb2.DebugInfo())
    assert "visible only in debug" in debug.detail
    assert outcome.error.details() == GENERIC_MESSAGE  # type: ignore[attr-defined]


class _Unprintable:
    def __str__(self) -> str:
        raise ValueError("cannot render secret")


def test_unencodable_error_still_ends_the_call_safely() -> None:
    """An error whose message cannot be rendered becomes INTERNAL with the generic message."""

    def broken() -> BaseException:
        error = e.CacheError("placeholder")
        error.message = _Unprintable()  # type: ignore[assignment]
        return error

    with capture_logs() as logs, sync_server(sync_handlers(Script(error=broken)),
                                             server_interceptors(metrics=False)) as target:
        outcome = call_sync(target, "unary")
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert outcome.error.details() == GENERIC_MESSAGE  # type: ignore[attr-defined]
    assert [(x["log_level"], x["error_code"]) for x in logs] == [("critical", "INTERNAL_ERROR")]


def test_broken_logger_does_not_change_the_status() -> None:
    """A logger that raises is bypassed: the client still gets the mapped status."""

    class Broken:
        def warning(self, event: str, **fields: object) -> None:
            raise RuntimeError("log sink down")

    with sync_server(sync_handlers(Script(error=lambda: e.TaskNotFoundError("t"))),
                     server_interceptors(metrics=False, logger=CallLogger(Broken()))) as target:
        outcome = call_sync(target, "unary")
    assert outcome.error is not None
    assert from_rpc_error(outcome.error) == e.TaskNotFoundError("t")


async def test_aio_plain_function_handlers_run_in_the_pool_with_the_stack() -> None:
    """aio: a plain-function handler still runs in grpc's migration pool, inside our stack."""
    threads: list[str] = []

    def plain(request: bytes, context: Any) -> bytes:
        threads.append(threading.current_thread().name)
        return b"plain " + request

    handlers = [grpc.method_handlers_generic_handler("test.Shapes", {
        "Unary": grpc.unary_unary_rpc_method_handler(plain)})]
    with futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="migration") as pool:
        async with aio_server(handlers, server_aio.server_interceptors(metrics=False),
                              migration_pool=pool) as target:
            outcome = await call_aio(target, "unary", [("x-request-id", "r")])
    assert outcome.messages == [b"plain req"]
    assert outcome.trailers["x-request-id"] == "r"  # our stack ran
    assert [name.startswith("migration") for name in threads] == [True]
