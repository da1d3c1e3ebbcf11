"""Change notifications for ``WatchTask``: writers publish a task id, watchers wake up.

A notification only says "look again": the watcher re-reads the task from the store, so a
missed or merged wake-up never loses a state (the store is the truth, not the events).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

__all__ = ["TaskEvents"]


class TaskEvents:
    """Per-task wake-ups, for one event loop."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self.closed = False
        """Set by :meth:`close`: watchers should end their streams."""

    def close(self) -> None:
        """Wake every watcher for good (the server is stopping; streams must not hold it up)."""
        self.closed = True
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()

    def publish(self, task_id: str) -> None:
        """Wake every watcher of ``task_id`` (call from the loop's thread)."""
        for event in self._watchers.get(task_id, ()):
            event.set()

    @contextlib.contextmanager
    def subscribe(self, task_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``task_id`` changes; subscribe before reading the task."""
        event = asyncio.Event()
        self._watchers.setdefault(task_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(task_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[task_id]

    def watcher_count(self, task_id: str) -> int:
        """How many watchers ``task_id`` has (for tests and metrics)."""
        return len(self._watchers.get(task_id, ()))
