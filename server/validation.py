"""Request validation for the task service: every violation is collected, then raised at once.

The seed's patterns 3 and 4 together: the checks of ``validate_task_contract`` (description
required, not blank, at most 10 000 characters; priority 1..10; timeout positive when set),
aggregated into one :class:`ValidationErrors` so a caller fixes everything in one round trip.
Field names are the proto's, so the ``BadRequest`` field violations point at real fields.
"""

from __future__ import annotations

from collections.abc import Sequence

from octollm_grpc.errors import InvalidInputError, ValidationErrors

__all__ = [
    "DEFAULT_PRIORITY",
    "MAX_BATCH",
    "MAX_DESCRIPTION",
    "MAX_PAGE_SIZE",
    "MAX_REQUEST_ID",
    "require_task_id",
    "validate_batch",
    "validate_create",
    "validate_page_size",
]

MAX_DESCRIPTION = 10_000
MAX_REQUEST_ID = 128
MAX_BATCH = 100
MAX_PAGE_SIZE = 1000
DEFAULT_PRIORITY = 5


def validate_create(description: str, priority: int | None, timeout_seconds: int | None,
                    request_id: str) -> None:
    """Raise :class:`ValidationErrors` listing every invalid field of a create request.

    ``priority`` / ``timeout_seconds`` are ``None`` when the field was not set (unset priority
    means the default, unset timeout means no bound).
    """
    errors: list[dict[str, str]] = []
    if not description:
        errors.append({"field": "description", "message": "Description is required"})
    elif not description.strip():
        errors.append({"field": "description", "message": "Description cannot be blank"})
    elif len(description) > MAX_DESCRIPTION:
        errors.append({"field": "description", "message":
                       f"Description exceeds maximum length of {MAX_DESCRIPTION} characters"})
    if priority is not None and not 1 <= priority <= 10:
        errors.append({"field": "priority", "message": "Priority must be between 1 and 10"})
    if timeout_seconds is not None and timeout_seconds <= 0:
        errors.append({"field": "timeout_seconds", "message": "Timeout must be positive"})
    if len(request_id) > MAX_REQUEST_ID:
        errors.append({"field": "request_id", "message":
                       f"Request id exceeds maximum length of {MAX_REQUEST_ID} characters"})
    if errors:
        raise ValidationErrors(errors)


def require_task_id(task_id: str) -> str:
    """``task_id`` itself; :class:`InvalidInputError` on ``task_id`` when it is empty."""
    if not task_id:
        raise InvalidInputError("task_id is required", field="task_id")
    return task_id


def validate_page_size(page_size: int, default: int = 50) -> int:
    """The page size to use: ``default`` for 0; :class:`InvalidInputError` out of 0..1000."""
    if page_size == 0:
        return default
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidInputError(f"page_size must be between 1 and {MAX_PAGE_SIZE}",
                                field="page_size")
    return page_size


def validate_batch(task_ids: Sequence[str]) -> None:
    """Raise :class:`ValidationErrors` unless there are 1..100 distinct, non-empty task ids."""
    errors: list[dict[str, str]] = []
    if not task_ids:
        errors.append({"field": "task_ids", "message": "At least one task id is required"})
    elif len(task_ids) > MAX_BATCH:
        errors.append({"field": "task_ids",
                       "message": f"At most {MAX_BATCH} task ids per batch"})
    for index, task_id in enumerate(task_ids):
        if not task_id:
            errors.append({"field": f"task_ids[{index}]", "message": "Task id is required"})
    if len(set(task_ids)) != len(task_ids):
        errors.append({"field": "task_ids", "message": "Task ids must be distinct"})
    if errors:
        raise ValidationErrors(errors)
