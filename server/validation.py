"""Request validation for the task service: every violation is collected, then raised at once.

The seed's patterns 3 and 4 together: the checks of ``validate_task_contract`` (description
required, not blank, at most 10 000 characters; priority 1..10; timeout positive when set),
aggregated into one :class:`ValidationErrors` so a caller fixes everything in one round trip.
Field names are the proto's, so the ``BadRequest`` field violations point at real fields.
"""

from __future__ import annotations

from collections.abc import Sequence

from octollm_grpc.errors import InvalidInputError
from octollm_grpc.server._validation import Violations

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
    with Violations() as violations:
        # Like the seed: a missing description is one violation, not also "blank".
        _ = (violations.required("description", description)
             and violations.not_blank("description", description)
             and violations.max_length("description", description, MAX_DESCRIPTION))
        if priority is not None:
            violations.in_range("priority", priority, 1, 10)
        violations.positive("timeout_seconds", timeout_seconds)
        violations.max_length("request_id", request_id, MAX_REQUEST_ID)


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
    with Violations() as violations:
        if violations.check(bool(task_ids), "task_ids", "task_ids is required",
                            reason="REQUIRED"):
            violations.check(len(task_ids) <= MAX_BATCH, "task_ids",
                             f"task_ids must hold at most {MAX_BATCH} ids", reason="TOO_MANY")
        for index, task_id in enumerate(task_ids):
            violations.required(f"task_ids[{index}]", task_id)
        violations.check(len(set(task_ids)) == len(task_ids), "task_ids",
                         "task_ids must be distinct", reason="DUPLICATE")
