"""Request ids: taken from the caller's ``x-request-id`` when it is sane, generated otherwise.

The id of the call being served is readable anywhere in the handler with
[`current_request_id`][octollm_grpc.server.current_request_id] (a ``contextvars`` variable: the aio
servicer context rejects new
attributes, and a context variable works the same on both stacks).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_HEADER", "RequestIds", "current_request_id"]

DEFAULT_HEADER = "x-request-id"

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "octollm_request_id", default=None
)
#: What the call being served passes on (an ``_propagation.Inbound``: deadline, request id,
#: header). Defined here so the server stack binds one variable per call for both: the id is
#: read from it unless `bind` set one of its own (the FastAPI middleware does).
_inbound: contextvars.ContextVar[Any] = contextvars.ContextVar("octollm_inbound", default=None)


def current_request_id() -> str | None:
    """The request id of the call this code runs in, or ``None`` outside a served call.

    Returns:
        The call's ``x-request-id``, or ``None`` outside a served call.
    """
    request_id = _current.get()
    if request_id is None:
        inbound = _inbound.get()
        if inbound is not None:
            return inbound.request_id  # type: ignore[no-any-return]
    return request_id


#: Ids drawn per ``os.urandom`` call. Each call is a syscall that releases the GIL: on a
#: busy sync server every release hands the GIL to another worker and costs thread switches.
_BATCH = 64
_pool: list[str] = []
# A forked child must not hand out ids its parent already holds (no fork on Windows).
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.clear)


def _random_hex() -> str:
    # 128 random bits as 32 hex characters, like uuid4().hex, at a fraction of its cost.
    # list.pop and list.extend are atomic, so threads never share an id; two threads that find
    # the pool empty at once both refill it, which only draws a few extra ids.
    try:
        return _pool.pop()
    except IndexError:
        pass
    data = os.urandom(16 * _BATCH).hex()
    ids = [data[i : i + 32] for i in range(0, 32 * _BATCH, 32)]
    first = ids.pop()
    _pool.extend(ids)
    return first


@dataclass(frozen=True, slots=True)
class RequestIds:
    """Where request ids come from and go to.

    ``header`` is read from the invocation metadata and written to the trailing metadata.
    An incoming value is used when ``trust_incoming`` is true and it is printable ASCII of at
    most ``max_length`` characters (it ends up in logs, so nothing that could forge a line);
    otherwise ``generate()`` makes a new one (32 hex characters by default).

    Args:
        header: The metadata key read and echoed.
        generate: Makes an id when the caller sent none (or an untrusted one).
        trust_incoming: Keep the caller's id (else always generate).
        max_length: Longer incoming ids are replaced.
    """

    header: str = DEFAULT_HEADER
    generate: Callable[[], str] = field(default=_random_hex)
    trust_incoming: bool = True
    max_length: int = 128

    def __post_init__(self) -> None:
        if not self.header or self.header != self.header.lower():
            raise ValueError(f"header must be a non-empty lower-case metadata key: {self.header!r}")
        if self.header.endswith("-bin"):
            raise ValueError("a request id header cannot be binary (-bin)")
        if self.max_length < 1:
            raise ValueError(f"max_length must be positive, not {self.max_length!r}")

    def from_metadata(self, metadata: Iterable[Any] | None) -> str:
        """The id for a call with this invocation metadata."""
        if self.trust_incoming and metadata:
            header = self.header
            for key, value in metadata:
                if key == header:
                    if (
                        isinstance(value, str)
                        and 0 < len(value) <= self.max_length
                        and value.isascii()
                        and value.isprintable()
                    ):
                        return value
                    break
        return self.generate()


def bind(request_id: str) -> contextvars.Token[str | None]:
    """Make ``request_id`` the current one; pass the token to `unbind` when the call ends."""
    return _current.set(request_id)


def unbind(token: contextvars.Token[str | None]) -> None:
    """Undo `bind` (tolerates a call ended from another context, e.g. a GC'd generator)."""
    try:
        _current.reset(token)
    except (ValueError, RuntimeError):
        _current.set(None)
