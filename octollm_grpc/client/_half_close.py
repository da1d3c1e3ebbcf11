"""Whether the caller of an aio call with a request stream has half-closed it.

``grpc.aio`` lets a caller send with ``call.write()`` and end with ``call.done_writing()``.
For an intercepted call, grpc checks half-close by reading ``_done_writing_flag`` from the call
object the outermost interceptor returned (a private name, the only protocol grpc offers), so
its ``write()`` after ``done_writing()`` raises ``InvalidStateError`` instead of dropping the
message. Our call objects answer that from what they saw themselves: the request stream they
passed on has ended, which is when grpc half-closes the call (no private name of grpc's call
is read). ``tests/client/test_public_api_half_close.py`` fails if grpc stops honouring it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

__all__ = ["WatchedRequests", "watch"]


class WatchedRequests(AsyncIterator[Any]):
    """An async request stream that records, in `ended`, that it has ended."""

    __slots__ = ("_source", "ended")

    def __init__(self, source: AsyncIterable[Any]) -> None:
        self._source = aiter(source)
        #: The source is exhausted: the caller has sent its last request (half-close).
        self.ended = False

    def __aiter__(self) -> WatchedRequests:
        return self

    async def __anext__(self) -> Any:
        try:
            return await anext(self._source)
        except StopAsyncIteration:
            self.ended = True
            raise


def watch(requests: Any) -> tuple[Any, WatchedRequests | None]:
    """``requests`` as to pass on, and the watcher that says when they end.

    An already watched stream (from an outer interceptor of ours) is shared, not wrapped
    twice. A sync iterable (or ``None``) is passed on as it is, with no watcher: grpc's
    ``write()`` style always hands interceptors an async stream.
    """
    if isinstance(requests, WatchedRequests):
        return requests, requests
    if isinstance(requests, AsyncIterable):
        watcher = WatchedRequests(requests)
        return watcher, watcher
    return requests, None
