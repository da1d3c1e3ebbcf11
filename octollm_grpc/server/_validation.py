"""Request validation that reports every violation at once (the standard's patterns 3 and 4).

Collect with a [`Violations`][octollm_grpc.server.Violations], then raise one
`ValidationErrors`; the server interceptors turn it into
``INVALID_ARGUMENT`` with a ``google.rpc.BadRequest`` listing each field violation::

    with Violations() as v:
        v.not_blank("description", request.description)
        v.max_length("description", request.description, 10_000)
        v.in_range("priority", request.priority, 1, 10)
    # leaving the block raised ValidationErrors if anything was added
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from octollm_grpc.errors import ValidationErrors

__all__ = ["Violations"]


class Violations:
    """An ordered list of ``{"field", "message"[, "reason"]}`` violations for one request.

    Each check adds a violation when it fails and returns whether the value passed, so later
    checks can depend on earlier ones. As a context manager it raises on a clean exit when
    any violation was added (an exception from the block propagates unchanged).
    """

    __slots__ = ("_errors",)

    def __init__(self) -> None:
        self._errors: list[dict[str, str]] = []

    @property
    def errors(self) -> list[dict[str, str]]:
        """A copy of the violations found so far, in order."""
        return [dict(e) for e in self._errors]

    def __bool__(self) -> bool:
        return bool(self._errors)

    def __len__(self) -> int:
        return len(self._errors)

    def add(self, field: str, message: str, *, reason: str = "") -> None:
        """Record one violation of ``field``; ``reason`` is a machine-readable code."""
        item = {"field": field, "message": message}
        if reason:
            item["reason"] = reason
        self._errors.append(item)

    def check(self, ok: bool, field: str, message: str, *, reason: str = "") -> bool:
        """Record a violation unless ``ok``; returns ``ok``."""
        if not ok:
            self.add(field, message, reason=reason)
        return ok

    def required(self, field: str, value: Any) -> bool:
        """``value`` is set (not ``None``, not empty)."""
        return self.check(value is not None and value != "" and value != b"", field,
                          f"{field} is required", reason="REQUIRED")

    def not_blank(self, field: str, value: str | None) -> bool:
        """``value`` has a non-whitespace character (a missing value counts as blank)."""
        return self.check(bool(value and value.strip()), field,
                          f"{field} must not be blank", reason="BLANK")

    def max_length(self, field: str, value: str | None, limit: int) -> bool:
        """``value`` has at most ``limit`` characters (``None`` passes)."""
        return self.check(value is None or len(value) <= limit, field,
                          f"{field} exceeds maximum length of {limit} characters",
                          reason="TOO_LONG")

    def in_range(self, field: str, value: float, low: float, high: float) -> bool:
        """``low <= value <= high``."""
        return self.check(low <= value <= high, field,
                          f"{field} must be between {low} and {high}", reason="OUT_OF_RANGE")

    def positive(self, field: str, value: float | None) -> bool:
        """``value`` is greater than zero when set (``None`` passes)."""
        return self.check(value is None or value > 0, field,
                          f"{field} must be positive", reason="NOT_POSITIVE")

    def raise_if_any(self) -> None:
        """Raise one `ValidationErrors` with every violation, if there is any."""
        if self._errors:
            raise ValidationErrors(self.errors)

    def __enter__(self) -> Violations:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.raise_if_any()
