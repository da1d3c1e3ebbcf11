"""Deadline and request id propagation: what a served call hands to the calls it makes.

While a handler served by our server stack runs (a sync worker thread or an asyncio task),
`inbound` tells what the call being served allows: its deadline (on ``time.monotonic``)
and its request id. A resilient channel applies it to every outbound call it makes from there
(`outbound_timeout`, `outbound_metadata`):

- a call that sets no timeout gets the time left of the incoming deadline;
- a call that sets one gets the shorter of the two (a downstream call cannot outlive the
  call it serves: its caller has stopped waiting);
- the incoming request id is sent as ``x-request-id`` (the header the server reads it from),
  unless the call sets that header itself; outside a served call a fresh id is sent, the same
  for every attempt of the call.

The state is a ``contextvars`` variable: each sync call runs in its own thread and each aio
call in its own task, so concurrent calls never see each other's deadline or id, and code
outside a served call sees none.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from octollm_grpc.observability._requestid import DEFAULT_HEADER, _inbound, _random_hex

__all__ = ["Inbound", "enter", "inbound", "leave", "outbound_metadata", "outbound_timeout"]


class Inbound(NamedTuple):  # a NamedTuple: made on every served call, and cheap to make
    """What the call being served passes on: ``deadline`` (``time.monotonic`` seconds, or
    ``None`` when its caller set none), the request id and the header it travels in."""

    deadline: float | None
    request_id: str | None
    header: str = "x-request-id"

    def remaining(self) -> float | None:
        """Seconds left until the deadline (``None``: no deadline; may be ``<= 0``)."""
        return None if self.deadline is None else self.deadline - time.monotonic()


_new_tuple = tuple.__new__

#: More seconds left than this is "no deadline" (about 31 years).
_NO_DEADLINE = 1e9

def inbound() -> Inbound | None:
    """What the call this code serves passes on, or ``None`` outside a served call."""
    current: Inbound | None = _inbound.get()
    return current


def enter(context: object, request_id: str | None, header: str = "x-request-id",
          ) -> contextvars.Token[Inbound | None]:
    """Bind the call served with ``context`` (sync or aio); pass the token to `leave`."""
    # A context without time_remaining (a test double) is a call without a deadline.
    time_remaining = getattr(context, "time_remaining", None)
    remaining = time_remaining() if time_remaining is not None else None
    # A sync call without a deadline reports ~9.2e18 s left (grpc core's infinite future).
    deadline = (None if remaining is None or remaining > _NO_DEADLINE
                else time.monotonic() + remaining)
    # tuple.__new__: the NamedTuple's own __new__ is a Python function, a frame per call.
    return _inbound.set(_new_tuple(Inbound, (deadline, request_id, header)))


def leave(token: contextvars.Token[Inbound | None]) -> None:
    """Undo `enter` (tolerates a call ended from another context)."""
    try:
        _inbound.reset(token)
    except (ValueError, RuntimeError):
        _inbound.set(None)


def outbound_timeout(timeout: float | None) -> float | None:
    """The timeout an outbound call gets: ``timeout``, capped by the incoming deadline.

    At least a microsecond, so a spent deadline ends the call with ``DEADLINE_EXCEEDED``
    (gRPC reads a zero timeout as none at all on some paths).
    """
    current = _inbound.get()
    if current is None or current.deadline is None:
        return timeout
    left = max(current.deadline - time.monotonic(), 1e-6)
    return left if timeout is None or left < timeout else timeout


def outbound_metadata(metadata: Sequence[tuple[str, Any]] | None,
                      ) -> Sequence[tuple[str, Any]] | None:
    """``metadata`` plus the call's request id, unless the caller set that header itself.

    Inside a served call the id is the incoming one; elsewhere a fresh id is drawn. It is
    added once per logical call (the observer runs before the retry layer), so every attempt,
    retry or hedge of one call carries the same id and the server's log lines of it join.
    """
    current = _inbound.get()
    if current is None:
        header, request_id = DEFAULT_HEADER, None
    else:
        header, request_id = current.header, current.request_id
    if metadata:
        for key, _value in metadata:
            if key == header:
                return metadata
        return (*metadata, (header, request_id or _random_hex()))
    return ((header, request_id or _random_hex()),)
