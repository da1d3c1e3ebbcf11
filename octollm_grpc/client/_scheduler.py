"""One background thread that starts the delayed retries of sync ``.future()`` calls.

A future whose attempt failed must wait out its backoff without blocking the caller. A thread
per waiting retry costs a thread (and its stack) per call in backoff; here one daemon thread
keeps the waiting retries in a heap by due time and starts each when it is due.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["RetryScheduler", "shared_scheduler"]

_log = logging.getLogger("octollm_grpc.client")
#: (due on time.monotonic, order of scheduling, callback, injected sleep or None, delay)
_Entry = tuple[float, int, Callable[[], None], Callable[[float], None] | None, float]


class RetryScheduler:
    """Runs callbacks after a delay, in due order, on one daemon thread.

    ``sleep`` other than ``time.sleep`` (an injected one, e.g. a fake clock's) is called on
    the scheduler thread with the delay before the callback, instead of a timed wait: the
    waits of a fake clock are recorded and cost no time. Callbacks must not block: they start
    an attempt (which returns a pending future) or resolve a future.
    """

    def __init__(self, name: str = "octollm-grpc-retry") -> None:
        self._name = name
        self._condition = threading.Condition()
        self._due: list[_Entry] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def call_later(self, delay: float, callback: Callable[[], None],
                   sleep: Callable[[float], None] = time.sleep) -> None:
        """Run ``callback()`` on the scheduler thread once ``delay`` seconds have passed."""
        delay = max(0.0, delay)
        now = time.monotonic()
        entry: _Entry
        if sleep is time.sleep:
            entry = (now + delay, next(self._order), callback, None, delay)
        else:
            entry = (now, next(self._order), callback, sleep, delay)
        with self._condition:
            heapq.heappush(self._due, entry)
            if self._thread is None or not self._thread.is_alive():  # first use, or forked
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while True:
                    now = time.monotonic()
                    if self._due and self._due[0][0] <= now:
                        break
                    self._condition.wait(self._due[0][0] - now if self._due else None)
                _, _, callback, sleep, delay = heapq.heappop(self._due)
            try:
                if sleep is not None:
                    sleep(delay)
                callback()
            except Exception:  # noqa: BLE001 - one broken callback must not stop the others
                _log.exception("octollm_grpc: a scheduled retry failed")


_shared = RetryScheduler()


def shared_scheduler() -> RetryScheduler:
    """The process-wide scheduler the sync futures use."""
    return _shared
