"""Request streams that can be sent again: what makes a client-streaming call retryable.

The first attempt pulls from the caller's iterator and keeps what it sent; a retry sends that
again, then continues pulling. Everything sent is kept for the life of the call, so only
opt in (``RetryPolicy.replayable_requests``) for streams of bounded size.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

__all__ = ["AsyncReplay", "Replay"]


class Replay:
    """A sync request iterator, replayable: each `fresh` iterator yields it from the start.

    Thread-safe: grpc consumes each attempt's requests on its own thread.
    """

    def __init__(self, source: Iterable[Any]) -> None:
        self._source = iter(source)
        self._sent: list[Any] = []
        self._exhausted = False
        self._lock = threading.Lock()

    def fresh(self) -> Iterator[Any]:
        """An iterator over every request, from the first."""
        index = 0
        while True:
            with self._lock:
                if index < len(self._sent):
                    item = self._sent[index]
                elif self._exhausted:
                    return
                else:
                    try:
                        item = next(self._source)
                    except StopIteration:
                        self._exhausted = True
                        return
                    self._sent.append(item)
            index += 1
            yield item


class AsyncReplay:
    """The asyncio form of `Replay`; the source may be a sync or an async iterable."""

    def __init__(self, source: AsyncIterable[Any] | Iterable[Any]) -> None:
        self._async: AsyncIterator[Any] | None = None
        self._sync: Iterator[Any] | None = None
        if isinstance(source, AsyncIterable):
            self._async = aiter(source)
        else:
            self._sync = iter(source)
        self._sent: list[Any] = []
        self._exhausted = False
        self._lock = asyncio.Lock()

    async def _pull(self) -> tuple[bool, Any]:
        try:
            if self._async is not None:
                return True, await anext(self._async)
            assert self._sync is not None
            return True, next(self._sync)
        except (StopIteration, StopAsyncIteration):
            return False, None

    async def fresh(self) -> AsyncIterator[Any]:
        """An async iterator over every request, from the first."""
        index = 0
        while True:
            async with self._lock:
                if index < len(self._sent):
                    item = self._sent[index]
                elif self._exhausted:
                    return
                else:
                    more, item = await self._pull()
                    if not more:
                        self._exhausted = True
                        return
                    self._sent.append(item)
            index += 1
            yield item
