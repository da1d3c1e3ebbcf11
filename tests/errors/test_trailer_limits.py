"""The rich status always fits gRPC's default metadata limit, whatever the error holds.

grpc core silently drops (or fails the call over) trailers past the 8 KiB soft limit, counting
binary values decoded, plus 32 bytes per entry. Whatever an error's message, details, error
code, retry advice, request id or domain, ``to_status`` must stay under it, and a real client
must receive the status with its details.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.status import from_rpc_error, to_status
from octollm_grpc.status._limits import DETAILS_KEY
from tests.server.harness import Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server

#: grpc core's default soft limit on a metadata block (grpc.max_metadata_size).
METADATA_LIMIT = 8 * 1024
#: What the request-id trailer of our server stack may add at most (its default max length).
REQUEST_ID_ROOM = 32 + len("x-request-id") + 128


def _wire_length(text: str) -> int:
    # grpc-message is percent-encoded: all but printable ASCII (and '%') take three bytes.
    return sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in text.encode("utf-8"))


def _block_size(status: grpc.Status) -> int:
    """The trailer block as grpc core counts it: key + value (binary decoded) + 32 each."""
    size = 32 + len("grpc-status") + 2 + 32 + len("grpc-message") + _wire_length(status.details)
    for key, value in status.trailing_metadata:
        size += 32 + len(key) + (len(value) if isinstance(value, bytes) else len(value.encode()))
    return size


class HugeCodeError(e.OctoLLMError):
    error_code = "HUGE_" + "X" * 12_000


WORST: list[tuple[str, Any, dict[str, Any]]] = [
    ("huge_error_code", lambda: HugeCodeError("m"), {}),
    ("huge_request_id", lambda: e.TaskNotFoundError("t"), {"request_id": "r" * 20_000}),
    ("huge_domain", lambda: e.ValidationError("m"), {"domain": "d" * 20_000}),
    ("absurd_retry_after", lambda: e.RateLimitError(limit=1, window=1, retry_after=1e300), {}),
    ("percent_message", lambda: e.TaskNotFoundError("%\u00e9" * 5000), {}),
    ("huge_violations", lambda: e.ValidationErrors(
        [{"field": "f" * 3000, "message": "\u00e9" * 3000}] * 50), {}),
    ("everything", lambda: HugeCodeError("%\u00e9" * 5000, details={
        "field": "f" * 9000, "task_id": "t" * 9000, "nested": [{"x": "y" * 900}] * 90},
        retry_after=1e300), {"request_id": "r" * 9000, "domain": "d" * 9000}),
]


@pytest.mark.parametrize(("name", "make", "kwargs"), WORST, ids=[w[0] for w in WORST])
def test_worst_cases_fit_the_default_limit(name: str, make: Any, kwargs: dict[str, Any]) -> None:
    """Each hand-picked worst case encodes (no exception) within the limit."""
    status = to_status(make(), **kwargs)
    assert _block_size(status) + REQUEST_ID_ROOM <= METADATA_LIMIT, name
    assert any(key == DETAILS_KEY for key, _ in status.trailing_metadata)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=3000)
_value = st.recursive(st.none() | st.booleans() | st.integers() | _text,
                      lambda inner: st.lists(inner, max_size=8)
                      | st.dictionaries(_text, inner, max_size=8), max_leaves=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=_text, details=st.dictionaries(_text, _value, max_size=6),
       retry_after=st.none() | st.floats(min_value=0, allow_nan=False),
       request_id=st.none() | st.text(max_size=3000))
def test_any_error_fits_the_default_limit(message: str, details: dict[str, Any],
                                          retry_after: float | None,
                                          request_id: str | None) -> None:
    """Generated message, details, retry advice and request id: always within the limit."""
    for cls in (e.ValidationErrors, e.TaskNotFoundError, e.RateLimitError, e.OctoLLMError):
        error = cls.restore(message, None, details, retry_after)
        status = to_status(error, request_id=request_id)
        assert _block_size(status) + REQUEST_ID_ROOM <= METADATA_LIMIT


DOMAIN = "example.com/" + "d" * 20_000  # a server configured with an absurd domain


def _huge() -> BaseException:
    return e.TaskNotFoundError.restore("%\u00e9" * 5000, None, {
        "task_id": "t" * 9000, "nested": [{"x": "y" * 900}] * 90}, 1e300)


def _check(outcome: Any) -> None:
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.NOT_FOUND
    assert DETAILS_KEY in outcome.trailers  # the rich status arrived
    decoded = from_rpc_error(outcome.error)
    assert type(decoded) is e.TaskNotFoundError
    assert decoded.request_id == "rid-limits"


def test_sync_server_delivers_the_rich_status() -> None:
    """Sync server: the worst error's status arrives with its details and request id."""
    with capture_logs(), sync_server(sync_handlers(Script(error=_huge)),
                                     server_interceptors(metrics=False, domain=DOMAIN)) as target:
        for _ in range(5):  # past the soft limit grpc drops at random: try a few times
            _check(call_sync(target, "unary", [("x-request-id", "rid-limits")]))


async def test_aio_server_delivers_the_rich_status() -> None:
    """aio server: the same."""
    with capture_logs():
        interceptors = server_aio.server_interceptors(metrics=False, domain=DOMAIN)
        async with aio_server(aio_handlers(Script(error=_huge)), interceptors) as target:
            for _ in range(5):
                _check(await call_aio(target, "unary", [("x-request-id", "rid-limits")]))
