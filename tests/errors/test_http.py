"""HTTP gateway rendering: the seed's JSON envelope, the status and Retry-After."""

from __future__ import annotations

import json

import pytest

from octollm_grpc import errors as e
from octollm_grpc.http import to_http


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (e.TaskNotFoundError("t"), 404),
        (e.ValidationErrors([{"field": "f", "message": "m"}]), 400),
        (e.AuthenticationError(), 401),
        (e.AuthorizationError(), 403),
        (e.RateLimitError(1, 1, 1), 429),
        (e.ArmUnavailableError(["x"]), 503),
        (e.DatabaseError("q", ValueError("v")), 500),
        (e.LLMAPIError("p"), 502),
        (e.TimeoutError("op", 1), 504),
    ],
)
def test_status_and_body(error: e.OctoLLMError, status: int) -> None:
    """Each class renders with its HTTP status and exactly its to_dict() body."""
    rendered = to_http(error)
    assert rendered.status == status
    assert rendered.body == error.to_dict()
    json.dumps(rendered.body)


def test_retry_after_header_rounds_up() -> None:
    """Retry-After is whole seconds, rounded up, and only when the error advises a wait."""
    assert to_http(e.RateLimitError(1, 1, retry_after=30)).headers == {"Retry-After": "30"}
    assert to_http(e.CircuitOpenError("t", retry_after=0.2)).headers == {"Retry-After": "1"}
    assert to_http(e.TaskNotFoundError("t")).headers == {}


def test_unexpected_exception_is_generic() -> None:
    """Any other exception is the seed's generic 500, with none of its text."""
    rendered = to_http(RuntimeError("secret dsn=postgres://u:p@h"))
    assert rendered == (500, {}, {"error": "INTERNAL_ERROR",
                                  "message": "An internal error occurred", "details": {}})
    assert to_http(TimeoutError("pool")).status == 504
