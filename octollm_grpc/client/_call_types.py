"""What the sync client layers use of grpc's call objects and continuations, as protocols.

grpc's interceptor API hands over untyped continuations; these say what we rely on, so mypy
checks our use of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import grpc

__all__ = ["CallFuture", "CallStream", "Metadata", "StreamContinuation", "UnaryContinuation"]

#: grpc metadata as the sync calls return it (``None`` when there is none yet).
Metadata = tuple[tuple[str, str | bytes], ...]


class _Call(Protocol):
    """The ``grpc.Call`` methods our wrappers answer from the call they wrap."""

    def cancel(self) -> bool: ...
    def is_active(self) -> bool: ...
    def time_remaining(self) -> float | None: ...
    def add_callback(self, callback: Callable[[], None]) -> bool: ...
    def initial_metadata(self) -> Metadata | None: ...
    def trailing_metadata(self) -> Metadata | None: ...
    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str: ...


class CallFuture(_Call, Protocol):
    """What a sync unary-response continuation returns: a ``grpc.Call`` and ``grpc.Future``."""

    def done(self) -> bool: ...
    def exception(self, timeout: float | None = None) -> BaseException | None: ...
    def result(self, timeout: float | None = None) -> Any: ...
    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...


class CallStream(_Call, Iterator[Any], Protocol):
    """What a sync streamed-response continuation returns: a ``grpc.Call`` of messages."""


#: ``continuation(details, request_or_iterator)`` for a unary response.
UnaryContinuation = Callable[[grpc.ClientCallDetails, Any], CallFuture]
#: ``continuation(details, request_or_iterator)`` for a response stream.
StreamContinuation = Callable[[grpc.ClientCallDetails, Any], CallStream]
