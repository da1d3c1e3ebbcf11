"""Request validation: the seed's checks, every violation reported at once."""

from __future__ import annotations

import pytest

from octollm_grpc.errors import InvalidInputError, ValidationErrors
from server import messages, validation
from server.gen.octollm.tasks.v1.reasons_errors import InvalidPageTokenError


def test_every_violation_is_reported_at_once() -> None:
    """Blank description, bad priority, non-positive timeout: one error listing all three."""
    with pytest.raises(ValidationErrors) as raised:
        validation.validate_create("   ", 42, -5, "")
    assert raised.value.errors == [
        {"field": "description", "message": "description must not be blank", "reason": "BLANK"},
        {"field": "priority", "message": "priority must be between 1 and 10",
         "reason": "OUT_OF_RANGE"},
        {"field": "timeout_seconds", "message": "timeout_seconds must be positive",
         "reason": "NOT_POSITIVE"},
    ]


@pytest.mark.parametrize(("description", "reason"), [
    ("", "REQUIRED"),
    ("x" * 10_001, "TOO_LONG"),
])
def test_description_rules(description: str, reason: str) -> None:
    """A missing or too long description is exactly one violation on field 'description'."""
    with pytest.raises(ValidationErrors) as raised:
        validation.validate_create(description, None, None, "")
    assert [(e["field"], e["reason"]) for e in raised.value.errors] == [("description", reason)]


def test_limits_themselves_are_valid() -> None:
    """10000 characters, priority 1 and 10, timeout 1, unset priority/timeout all pass."""
    validation.validate_create("x" * 10_000, 1, 1, "r" * 128)
    validation.validate_create("x", 10, None, "")
    validation.validate_create("x", None, None, "")


def test_zero_timeout_when_set_is_a_violation() -> None:
    """An explicitly set timeout of 0 is not positive (unset means no bound)."""
    with pytest.raises(ValidationErrors) as raised:
        validation.validate_create("x", 0, 0, "r" * 129)
    assert [e["field"] for e in raised.value.errors] == [
        "priority", "timeout_seconds", "request_id"]


def test_batch_rules() -> None:
    """A batch needs 1..100 distinct, non-empty ids; each problem is listed."""
    with pytest.raises(ValidationErrors) as raised:
        validation.validate_batch(["a", "", "a"])
    assert [(e["field"], e["reason"]) for e in raised.value.errors] == [
        ("task_ids[1]", "REQUIRED"), ("task_ids", "DUPLICATE")]
    with pytest.raises(ValidationErrors):
        validation.validate_batch([])
    with pytest.raises(ValidationErrors):
        validation.validate_batch([str(i) for i in range(101)])
    validation.validate_batch([str(i) for i in range(100)])


def test_page_size_and_token() -> None:
    """page_size 0 means the default; out of range is INVALID_INPUT, a foreign token
    INVALID_PAGE_TOKEN (declared in reasons.proto) on field page_token."""
    assert validation.validate_page_size(0) == 50
    assert validation.validate_page_size(1000) == 1000
    with pytest.raises(InvalidInputError) as raised:
        validation.validate_page_size(-1)
    assert raised.value.details["field"] == "page_size"
    assert messages.decode_page_token(messages.encode_page_token(17)) == 17
    assert messages.decode_page_token("") == 0
    for token in ("garbage!", "YWZ0ZXI6LTE", messages.encode_page_token(3)[:-1] + "%"):
        with pytest.raises(InvalidPageTokenError) as foreign:
            messages.decode_page_token(token)
        assert foreign.value.details == {"field": "page_token"}
        assert foreign.value.error_code == "INVALID_PAGE_TOKEN"


def test_task_id_required() -> None:
    """An empty task_id is INVALID_INPUT on field task_id."""
    with pytest.raises(InvalidInputError) as raised:
        validation.require_task_id("")
    assert raised.value.details["field"] == "task_id"
    assert validation.require_task_id("t1") == "t1"
