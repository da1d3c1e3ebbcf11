"""How long to wait before a retry: full-jitter backoff, or what the server asked for.

The server's word wins (gRFC A6): ``grpc-retry-pushback-ms`` first, then ``RetryInfo`` in the
rich status. A pushback that is negative, not a number, or longer than `MAX_PUSHBACK`
means "do not retry".
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from google.rpc import error_details_pb2, status_pb2

__all__ = ["MAX_PUSHBACK", "STOP", "Backoff", "Exponential", "backoff_ceiling", "full_jitter",
           "server_delay"]

#: Returned by `server_delay` when the server said not to retry.
STOP: Final = -1.0
#: The longest server-requested wait honoured, in seconds (a day); longer ones stop retries.
MAX_PUSHBACK: Final = 86_400.0

_RETRY_INFO = "type.googleapis.com/" + error_details_pb2.RetryInfo.DESCRIPTOR.full_name
# The wire names (octollm_grpc.status's DETAILS_KEY and PUSHBACK_KEY, which a test keeps equal),
# written here so the core imports nothing of the gRPC layers.
DETAILS_KEY: Final = "grpc-status-details-bin"
PUSHBACK_KEY: Final = "grpc-retry-pushback-ms"


class Backoff(Protocol):
    """What the formula reads of a policy (``RetryPolicy`` and the resilience decorators')."""

    def backoff_ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1-based), in seconds."""
        ...


def positive(name: str, value: float) -> None:
    """Raise ``TypeError`` / ``ValueError`` unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, not {value!r}")


def backoff_ceiling(initial: float, maximum: float, multiplier: float, retry: int) -> float:
    """``min(initial * multiplier ** (retry - 1), maximum)`` for retry number ``retry``."""
    # Computed in log space once past the cap, so a huge retry number cannot overflow; the logs
    # are subtracted because maximum / initial itself overflows when initial is tiny.
    if retry > 1 and (retry - 1) * math.log(multiplier) > math.log(maximum) - math.log(initial):
        return maximum
    try:
        return min(initial * multiplier ** (retry - 1), maximum)
    except OverflowError:
        # Below the cap, but the power alone is past a float (initial < maximum / 1.8e308).
        return min(math.exp(math.log(initial) + (retry - 1) * math.log(multiplier)), maximum)


@dataclass(frozen=True, slots=True)
class Exponential:
    """Exponential backoff without the gRPC policy around it (the resilience decorators')."""

    initial_backoff: float
    max_backoff: float
    backoff_multiplier: float

    def __post_init__(self) -> None:
        positive("initial_backoff", self.initial_backoff)
        positive("max_backoff", self.max_backoff)
        positive("backoff_multiplier", self.backoff_multiplier)

    def backoff_ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1-based), in seconds."""
        return backoff_ceiling(self.initial_backoff, self.max_backoff, self.backoff_multiplier,
                               retry)


def full_jitter(policy: Backoff, retry: int, rng: random.Random) -> float:
    """A delay drawn uniformly from ``[0, policy.backoff_ceiling(retry)]``."""
    return rng.uniform(0.0, policy.backoff_ceiling(retry))


def _pushback_ms(value: Any) -> float:
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return STOP
    text = str(value).strip()
    # A6: a decimal integer; anything else (including a negative one) stops retries.
    if not (text.isascii() and text.isdigit()):
        return STOP
    digits = text.lstrip("0") or "0"
    # Longer than MAX_PUSHBACK (checked on the digits: a 400-digit value must not reach float(),
    # and time.sleep() rejects the int64 maximum grpc core lets through) also stops retries.
    if len(digits) > 12 or int(digits) > MAX_PUSHBACK * 1000:
        return STOP
    return int(digits) / 1000.0


def _retry_info(value: Any) -> float | None:
    if not isinstance(value, bytes):  # absent (None) or not a binary value
        return None
    try:
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.type_url == _RETRY_INFO:
                delay = error_details_pb2.RetryInfo.FromString(detail.value).retry_delay
                seconds = delay.seconds + delay.nanos / 1e9
                return seconds if 0 <= seconds <= MAX_PUSHBACK else STOP
    except Exception:  # noqa: BLE001 - malformed details: as if the server sent none
        return None
    return None


def server_delay(trailing_metadata: Iterable[tuple[str, Any]] | None) -> float | None:
    """The wait the server asked for, in seconds; `STOP`; or ``None`` if it said nothing."""
    if not trailing_metadata:
        return None
    details = None
    try:
        for key, value in trailing_metadata:
            if key == PUSHBACK_KEY:
                return _pushback_ms(value)
            if key == DETAILS_KEY:
                details = value
    except (TypeError, ValueError):
        return None
    return _retry_info(details)  # None when there were none
