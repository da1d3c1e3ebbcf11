"""What a failed call becomes: the status to send, the log level, the trailers to keep.

Pure functions shared by the sync and aio interceptors. The rules:

- an exception the handler did not decide on goes through
  [`octollm_grpc.status.to_status`][octollm_grpc.status.to_status]
  (unexpected exceptions get the generic message, never their text);
- a status the handler decided (``context.abort``, ``context.set_code``) is left as it is;
- trailers the handler set are kept, next to the status details and the request id
  (``abort_with_status`` alone would replace them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import grpc

from octollm_grpc.codes import CLIENT_FAULTS
from octollm_grpc.observability._logs import Level
from octollm_grpc.status._limits import DETAILS_KEY, GENERIC_MESSAGE, RichStatus

__all__ = [
    "Failure",
    "HandlerStatus",
    "level_for_code",
    "merge_trailers",
    "message_of",
]

Trailers = tuple[tuple[str, str | bytes], ...]

#: Codes that say the caller got something wrong: logged at warning, like 4xx errors
#: (``fault == "client"`` in ``octollm_grpc.codes.CODE_BEHAVIOUR``).
_CLIENT_CODES = CLIENT_FAULTS


class HandlerStatus(NamedTuple):
    """A ``grpc.Status`` built from what the handler set (for ``abort_with_status``)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: Trailers


grpc.Status.register(HandlerStatus)


class Failure(NamedTuple):
    """What the wrapper does with a failed call.

    ``status`` set: end the call with it (the sync wrapper via ``abort_with_status``, the aio
    one via ``abort``). ``status`` is ``None``: re-raise the exception unchanged (a
    cancellation, or an abort the handler already made), after setting ``trailers`` if the
    stack still allows it.
    """

    status: HandlerStatus | RichStatus | None
    trailers: Trailers | None


def level_for_code(code: grpc.StatusCode) -> Level:
    """``warning`` for codes the caller caused, ``error`` for the rest."""
    return "warning" if code in _CLIENT_CODES else "error"


def message_of(details: Any) -> str:
    """The handler's status message (``bytes`` on sync, ``str`` on aio), or the generic one."""
    if isinstance(details, bytes):
        details = details.decode("utf-8", "replace")
    return details if isinstance(details, str) and details else GENERIC_MESSAGE


def _pairs(metadata: Iterable[Any] | None, drop: frozenset[str]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in (metadata or ()) if k not in drop]


def merge_trailers(
    handler: Iterable[Any] | None,
    status: Trailers = (),
    request_id: tuple[str, str] | None = None,
) -> Trailers:
    """The handler's trailers, then the status's, then the request id; one value per our key.

    The handler's own ``grpc-status-details-bin`` and request-id entries give way to ours when
    we send a status, so the client reads one consistent set. Its ``grpc-retry-pushback-ms``
    is kept unless the status brings retry advice of its own: a handler that already retried
    its downstream can tell callers not to retry (gRFC A6's negative pushback).
    """
    ours = {k for k, _ in status}
    if request_id is not None:
        ours.add(request_id[0])
    if status:
        ours.add(DETAILS_KEY)
    merged: list[tuple[str, Any]] = _pairs(handler, frozenset(ours))
    merged.extend(status)
    if request_id is not None:
        merged.append(request_id)
    return tuple(merged)
