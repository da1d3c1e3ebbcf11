"""map_exception(): exceptions the application does not own, sent as the error a converter
makes, on both server stacks, all four RPC shapes, and the FastAPI handlers."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

import octollm_grpc
from octollm_grpc import codes
from octollm_grpc import errors as e
from octollm_grpc.fastapi import HTTP_FAILED_EVENT, install_error_handlers
from octollm_grpc.observability._logs import FAILED_EVENT
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._limits import GENERIC_MESSAGE
from tests.http.support import serve_app
from tests.readme import DOCS, section_examples
from tests.server.harness import (
    SHAPES,
    Outcome,
    Script,
    aio_handlers,
    call_aio,
    call_sync,
    sync_handlers,
)
from tests.servers import aio_server, sync_server

SECRET = "s3cret-row-17"
_C = grpc.StatusCode


@pytest.fixture(autouse=True)
def _restore_converters() -> Iterator[None]:
    # map_exception is process-wide: each test leaves the table as it found it.
    saved = dict(codes._converters)
    yield
    with codes._lock:
        codes._converters.clear()
        codes._converters.update(saved)
        codes._converter_for.clear()


def _not_found(exc: KeyError) -> e.OctoLLMError:
    return e.NotFoundError("No such order", details={"kind": "order"})


def _broken(exc: KeyError) -> e.OctoLLMError:
    raise RuntimeError(f"converter blew up near {SECRET}")


def _failed(logs: list[dict[str, Any]], event: str = FAILED_EVENT) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


def _check_mapped(outcome: Outcome, logs: list[dict[str, Any]]) -> None:
    assert outcome.error is not None
    assert outcome.error.code() == _C.NOT_FOUND  # type: ignore[attr-defined]
    decoded = from_rpc_error(outcome.error)
    assert type(decoded) is e.NotFoundError
    assert (decoded.message, dict(decoded.details)) == ("No such order", {"kind": "order"})
    assert SECRET not in repr((outcome.error.details(), outcome.trailers))  # type: ignore[attr-defined]
    [event] = _failed(logs)
    assert (event["log_level"], event["error_code"], event["grpc_code"]) == (
        "warning", "NOT_FOUND", "NOT_FOUND")


def _check_converter_failure(outcome: Outcome, logs: list[dict[str, Any]]) -> None:
    assert outcome.error is not None
    assert outcome.error.code() == _C.INTERNAL  # type: ignore[attr-defined]
    assert outcome.error.details() == GENERIC_MESSAGE  # type: ignore[attr-defined]
    wire = repr((outcome.error.details(), outcome.trailers,  # type: ignore[attr-defined]
                 outcome.error.debug_error_string()))  # type: ignore[attr-defined]
    assert SECRET not in wire
    assert "blew up" not in wire
    [broken] = [event for event in logs if event["event"] == "exception_converter_failed"]
    assert broken["log_level"] == "error"
    assert broken["exception_type"] == "KeyError"
    assert broken["converter"] == "_broken"
    assert isinstance(broken["exc_info"], RuntimeError)
    [event] = _failed(logs)
    assert (event["log_level"], event["error_code"], event["grpc_code"]) == (
        "critical", "INTERNAL_ERROR", "INTERNAL")


@pytest.mark.parametrize("shape", SHAPES)
def test_sync_server_sends_the_converted_error(shape: str) -> None:
    """Sync server, every shape: a mapped KeyError reaches the client as the converter's error."""
    octollm_grpc.map_exception(KeyError, _not_found)
    script = Script(error=lambda: KeyError(SECRET))
    with capture_logs() as logs, sync_server(sync_handlers(script),
                                             server_interceptors()) as target:
        outcome = call_sync(target, shape)
    _check_mapped(outcome, logs)


@pytest.mark.parametrize("shape", SHAPES)
async def test_aio_server_sends_the_converted_error(shape: str) -> None:
    """aio server, every shape: a mapped KeyError reaches the client as the converter's error."""
    octollm_grpc.map_exception(KeyError, _not_found)
    script = Script(error=lambda: KeyError(SECRET))
    with capture_logs() as logs:
        async with aio_server(aio_handlers(script), server_aio.server_interceptors()) as target:
            outcome = await call_aio(target, shape)
    _check_mapped(outcome, logs)


@pytest.mark.parametrize("shape", SHAPES)
def test_sync_converter_that_raises_is_internal_and_logged(shape: str) -> None:
    """Sync: a converter that raises gives INTERNAL, leaks nothing, and its failure is logged."""
    octollm_grpc.map_exception(KeyError, _broken)
    script = Script(error=lambda: KeyError(SECRET))
    with capture_logs() as logs, sync_server(sync_handlers(script),
                                             server_interceptors()) as target:
        outcome = call_sync(target, shape)
    _check_converter_failure(outcome, logs)


@pytest.mark.parametrize("shape", SHAPES)
async def test_aio_converter_that_raises_is_internal_and_logged(shape: str) -> None:
    """aio: a converter that raises gives INTERNAL, leaks nothing, and its failure is logged."""
    octollm_grpc.map_exception(KeyError, _broken)
    script = Script(error=lambda: KeyError(SECRET))
    with capture_logs() as logs:
        async with aio_server(aio_handlers(script), server_aio.server_interceptors()) as target:
            outcome = await call_aio(target, shape)
    _check_converter_failure(outcome, logs)


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/orders/{order_id}")
    async def order(order_id: str) -> dict[str, Any]:
        return {"price": {"o-1": 12}[order_id]}

    @app.post("/orders/{order_id}")
    def create(order_id: str) -> dict[str, Any]:
        raise sqlite3.IntegrityError(f"UNIQUE constraint failed: orders.id ({SECRET})")

    return app


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with serve_app(_app()) as url:
        yield url


def test_fastapi_handlers_send_the_converted_error(http_url: str) -> None:
    """FastAPI: mapped KeyError and sqlite3.IntegrityError answer 404 and 409, logged once."""
    octollm_grpc.map_exception(KeyError, lambda exc: e.NotFoundError(f"No such order: {exc}"))
    octollm_grpc.map_exception(sqlite3.IntegrityError,
                               lambda exc: e.AlreadyExistsError("That order already exists"))
    with capture_logs() as logs:
        missing = httpx.get(f"{http_url}/orders/o-9")
        duplicate = httpx.post(f"{http_url}/orders/o-1")
    assert missing.status_code == 404
    assert missing.json() == {"error": "NOT_FOUND", "message": "No such order: 'o-9'",
                              "details": {}}
    assert duplicate.status_code == 409
    assert duplicate.json()["error"] == "ALREADY_EXISTS"
    assert SECRET not in duplicate.text
    events = _failed(logs, HTTP_FAILED_EVENT)
    assert [(ev["log_level"], ev["grpc_code"]) for ev in events] == [
        ("warning", "NOT_FOUND"), ("warning", "ALREADY_EXISTS")]


def test_fastapi_converter_that_raises_is_a_generic_500(http_url: str) -> None:
    """FastAPI: a converter that raises gives the generic 500 and logs the converter's failure."""
    octollm_grpc.map_exception(sqlite3.IntegrityError, _broken)  # type: ignore[arg-type]
    with capture_logs() as logs:
        response = httpx.post(f"{http_url}/orders/o-1")
    assert response.status_code == 500
    assert response.json() == {"error": "INTERNAL_ERROR", "message": GENERIC_MESSAGE,
                               "details": {}}
    assert SECRET not in response.text and "blew up" not in response.text
    assert [ev["event"] for ev in logs if ev["event"] != HTTP_FAILED_EVENT] == [
        "exception_converter_failed"]
    [event] = _failed(logs, HTTP_FAILED_EVENT)
    assert (event["log_level"], event["error_code"]) == ("critical", "INTERNAL_ERROR")


def test_own_errors_page_map_exception_example_prints_what_it_says() -> None:
    """docs/own-errors.md: IntegrityError -> ALREADY_EXISTS, KeyError -> NOT_FOUND, as shown."""
    page = DOCS / "own-errors.md"
    (program,) = section_examples("map-exception", page)
    text = page.read_text(encoding="utf-8")
    shown = re.search(r"It prints what each client received:\n\n```\n(.*?)```", text, re.S)
    assert shown is not None
    run = subprocess.run([sys.executable, "-c", program], cwd=DOCS.parent, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    printed = [line for line in run.stdout.splitlines() if FAILED_EVENT not in line]
    assert printed == shown.group(1).splitlines() == [
        "ALREADY_EXISTS AlreadyExistsError ALREADY_EXISTS That order already exists",
        "NOT_FOUND NotFoundError NOT_FOUND No such order: o-9",
    ]
