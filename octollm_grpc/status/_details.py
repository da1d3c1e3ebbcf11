"""An error's details as a status carries them: JSON-safe, exact in a ``Struct`` or not,
the scalar ones as ``ErrorInfo`` metadata, and shortened when the trailer has no room."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from octollm_grpc.status._limits import MAX_RETRY_AFTER, safe_text

__all__ = [
    "MAX_EXACT_INT",
    "jsonable",
    "metadata",
    "scalar_metadata",
    "shortened",
    "struct_is_exact",
    "valid_retry_after",
]


def jsonable(value: Any) -> Any:
    """``value`` made JSON-safe: unknown objects become their ``str``, keys become strings, and
    lone surrogates in any string become ``?`` (protobuf cannot serialize them)."""
    if isinstance(value, str):
        return safe_text(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {safe_text(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return safe_text(str(value))


MAX_EXACT_INT = 2**53


def struct_is_exact(value: Any) -> bool:
    """True when a ``Struct`` carries ``value`` exactly, given that integral numbers decode as
    ``int``: no integral floats (``2.0``) and no integers a double cannot hold."""
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return -MAX_EXACT_INT <= value <= MAX_EXACT_INT
    if isinstance(value, float):
        return not value.is_integer()
    if isinstance(value, dict):
        return all(struct_is_exact(v) for v in value.values())
    if isinstance(value, list):
        return all(struct_is_exact(v) for v in value)
    return False


def metadata(details: Mapping[str, Any]) -> dict[str, str]:
    """ErrorInfo's string map: the scalar details only (lists and maps are in the envelope)."""
    out: dict[str, str] = {}
    for key, value in details.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            out[key] = str(value)
        elif value is None:
            out[key] = "null"
    return out


def scalar_metadata(details: Mapping[Any, Any]) -> dict[str, str] | None:
    """ErrorInfo's metadata for the common shape of details, or ``None`` for the rest.

    The common shape: string keys; values that are valid UTF-8 strings, bools, ``None``,
    integers a double holds and non-integral finite floats. For those `jsonable` is a
    plain copy and the ``Struct`` is exact, so the encoder skips the general walk.
    """
    out: dict[str, str] = {}
    for key, value in details.items():
        if type(key) is not str or (not key.isascii() and safe_text(key) is not key):
            return None
        kind = type(value)
        if kind is str:
            if not value.isascii() and safe_text(value) is not value:
                return None  # a lone surrogate: jsonable replaces it
            out[key] = value
        elif kind is bool:
            out[key] = "true" if value else "false"
        elif kind is int:
            if not -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
                return None
            out[key] = str(value)
        elif kind is float:
            if value.is_integer() or not math.isfinite(value):
                return None
            out[key] = str(value)
        elif value is None:
            out[key] = "null"
        else:
            return None
    return out


def valid_retry_after(value: Any) -> float | None:
    """Retry advice that can be sent: a finite number >= 0 (not a bool), capped at
    google.protobuf.Duration's maximum; ``None`` for anything else."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    # google.protobuf.Duration's range: beyond it the advice cannot be encoded at all.
    return min(value, MAX_RETRY_AFTER)


def shortened(value: Any, items: int) -> Any:
    """``value`` with lists cut to ``items``, maps to ``4 * items`` keys (at least 4) and
    strings to ``16 * items`` characters, all the way down."""
    if isinstance(value, str):
        return value[: items * 16]
    if isinstance(value, Mapping):
        return {k: shortened(v, items) for k, v in list(value.items())[: max(items, 1) * 4]}
    if isinstance(value, list):
        return [shortened(v, items) for v in value[:items]]
    return value
