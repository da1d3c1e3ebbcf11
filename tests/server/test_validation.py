"""Validation helpers: every violation is collected and reported at once as a BadRequest."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from octollm_grpc import errors as e
from octollm_grpc.server import Violations, server_interceptors
from octollm_grpc.server import aio as server_aio
from octollm_grpc.status import from_rpc_error
from tests.server.harness import call_aio, call_sync
from tests.servers import aio_server, sync_server


def _validate(description: str | None, priority: int, timeout: float | None) -> None:
    with Violations() as v:
        if v.not_blank("description", description):
            v.max_length("description", description, 10_000)
        v.in_range("priority", priority, 1, 10)
        v.positive("timeout", timeout)


def test_collects_every_violation() -> None:
    """Three bad fields -> one ValidationErrors listing all three, in order."""
    with pytest.raises(e.ValidationErrors) as caught:
        _validate("   ", 11, -1.0)
    assert [(x["field"], x["reason"]) for x in caught.value.errors] == [
        ("description", "BLANK"), ("priority", "OUT_OF_RANGE"), ("timeout", "NOT_POSITIVE")]
    assert caught.value.message == "Validation failed with 3 errors"


def test_valid_request_passes_and_checks_report_results() -> None:
    """No violation: nothing is raised; each check returns whether it passed."""
    _validate("write a poem", 5, None)
    v = Violations()
    assert v.required("id", "x") and not v.required("id", "")
    assert not v.max_length("name", "abcd", 3)
    assert v.check(True, "a", "never") and not v.check(False, "b", "b is wrong", reason="B")
    v.add("c", "custom")
    assert len(v) == 4 and bool(v)
    assert v.errors[-1] == {"field": "c", "message": "custom"}
    with pytest.raises(e.ValidationErrors):
        v.raise_if_any()


def test_exception_inside_block_propagates_unchanged() -> None:
    """An exception raised inside the block wins over the collected violations."""
    def body() -> None:
        with Violations() as v:
            v.add("x", "bad")
            raise KeyError("original")

    with pytest.raises(KeyError):
        body()


def _handler(request: bytes, context: Any) -> bytes:
    _validate("", 0, 0.0)
    return b"ok"


async def _aio_handler(request: bytes, context: Any) -> bytes:
    return _handler(request, context)


def _field_violations(err: Any) -> list[tuple[str, str]]:
    decoded = from_rpc_error(err)
    packed = next(d for d in decoded.rich_status.details if d.type_url.endswith("BadRequest"))
    bad = error_details_pb2.BadRequest()
    packed.Unpack(bad)
    return [(fv.field, fv.reason) for fv in bad.field_violations]


EXPECTED = [("description", "BLANK"), ("priority", "OUT_OF_RANGE"), ("timeout", "NOT_POSITIVE")]


def test_sync_server_reports_bad_request_with_all_fields() -> None:
    """Sync: the client gets INVALID_ARGUMENT with a BadRequest of every field violation."""
    handlers = [grpc.method_handlers_generic_handler("test.Shapes", {
        "Unary": grpc.unary_unary_rpc_method_handler(_handler)})]
    with sync_server(handlers, server_interceptors(metrics=False)) as target:
        outcome = call_sync(target, "unary")
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert _field_violations(outcome.error) == EXPECTED


async def test_aio_server_reports_bad_request_with_all_fields() -> None:
    """aio: the same BadRequest with every field violation."""
    handlers = [grpc.method_handlers_generic_handler("test.Shapes", {
        "Unary": grpc.unary_unary_rpc_method_handler(_aio_handler)})]
    async with aio_server(handlers, server_aio.server_interceptors(metrics=False)) as target:
        outcome = await call_aio(target, "unary")
    assert outcome.error is not None
    assert _field_violations(outcome.error) == EXPECTED
