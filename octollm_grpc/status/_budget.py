"""Telling a caller's own time budget apart from a slow server, across the wire.

A ``DEADLINE_EXCEEDED`` usually says the target is slow, and a client breaker counts it. But
a server may end a call with ``DEADLINE_EXCEEDED`` because the *caller's* budget ran out: the
task's own ``timeout_seconds``, or what was left of the caller's deadline when the server
called on. That says nothing about the server's health, and counting it lets one caller open
every other caller's breaker. The server marks such an error with
[`callers_budget`][octollm_grpc.status.callers_budget]
(one scalar detail, sent as ``ErrorInfo`` metadata); `spent_callers_budget` reads it on
the client, where the resilient channel's breaker gives such an attempt no verdict.

A server can only use the mark to keep a client's breaker closed on its own timeouts, which
it could equally do by answering with another code: the mark gives it no new power.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc.errors import OctoLLMError
from octollm_grpc.status._encode import type_url
from octollm_grpc.status._limits import DETAILS_KEY

__all__ = ["CALLERS_BUDGET", "TIMEOUT_CAUSE_KEY", "callers_budget", "spent_callers_budget"]

#: The detail (and ``ErrorInfo`` metadata key) naming what ran out.
TIMEOUT_CAUSE_KEY = "timeout_cause"
#: Its value when the caller's own time budget ran out.
CALLERS_BUDGET = "callers_budget"

_ERROR_INFO = type_url(error_details_pb2.ErrorInfo)
_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED

E = TypeVar("E", bound=OctoLLMError)


def callers_budget(error: E) -> E:
    """Mark ``error`` as caused by the caller's own time budget, and return it.

    Use it on the server for a timeout the caller chose (its request's timeout, its deadline),
    never for one of the server's own bounds. The mark travels as the detail
    ``timeout_cause="callers_budget"``.

    Args:
        error: the error the call ends with (normally a ``TimeoutError``).

    Returns:
        The same error, its details carrying the mark.
    """
    error.details[TIMEOUT_CAUSE_KEY] = CALLERS_BUDGET
    return error


def spent_callers_budget(code: grpc.StatusCode, trailing_metadata: Iterable[Any] | None) -> bool:
    """Whether a failed call's ``DEADLINE_EXCEEDED`` carries the caller's-budget mark.

    Args:
        code: the call's status code; any other code than ``DEADLINE_EXCEEDED`` gives False.
        trailing_metadata: the call's trailers, holding ``grpc-status-details-bin``.

    Returns:
        True when the rich status (of the same code) has ``ErrorInfo`` metadata
        ``timeout_cause="callers_budget"``. Never raises: unreadable trailers give False.
    """
    if code is not _DEADLINE_EXCEEDED or not trailing_metadata:
        return False
    try:
        for key, value in trailing_metadata:
            if key == DETAILS_KEY and isinstance(value, bytes):
                return _marked(status_pb2.Status.FromString(value))
    except Exception:  # noqa: BLE001 - garbage trailers: no mark
        return False
    return False


def _marked(status: status_pb2.Status) -> bool:
    if status.code != _DEADLINE_EXCEEDED.value[0]:
        return False  # details of another code are not this call's (grpcio-status's rule)
    for detail in status.details:
        if detail.type_url == _ERROR_INFO:
            info = error_details_pb2.ErrorInfo.FromString(detail.value)
            return info.metadata.get(TIMEOUT_CAUSE_KEY) == CALLERS_BUDGET
    return False
