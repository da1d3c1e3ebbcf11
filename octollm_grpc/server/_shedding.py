"""Cheap load shedding: rate-limit rejections logged in aggregate, their status built once.

A server under a flood refuses most calls. Each refusal is still counted per call (the
``grpc_server_handled_total`` and ``octollm_errors_total`` series), but writing one log line per
refused call would spend the CPU the limiter is there to save, so `RejectionLog` writes
one ``grpc.call.rate_limited`` event per caller key per interval, with the count. And the rich
status of a refusal depends only on the limit and the wait, so `RejectionStatuses`
builds it once and only adds the call's request id.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from octollm_grpc.errors import RateLimitError
from octollm_grpc.observability._logs import RATE_LIMITED_EVENT, CallLogger
from octollm_grpc.server._ratelimit import RateLimit
from octollm_grpc.status import to_status
from octollm_grpc.status._encode import StatusTemplate
from octollm_grpc.status._limits import DEFAULT_DOMAIN, RichStatus

__all__ = ["RATE_LIMITED_EVENT", "Refusal", "Rejection", "RejectionLog", "RejectionStatuses"]


def advertised_wait(wait: float) -> float:
    """``wait`` rounded up to three significant digits of milliseconds (at least 1 ms).

    What a refused caller is told to wait: never less than the limiter's wait (no retry comes
    before a token is due) and at most 1 % more, while refusals of one limit share a handful
    of statuses instead of one per millisecond (a 1 h wait moves in steps of 10 s).
    """
    ms = wait * 1000.0
    step = max(1.0, 10.0 ** (math.floor(math.log10(ms)) - 2)) if ms > 0 else 1.0
    return math.ceil(ms / step - 1e-9) * step / 1000.0


class Rejection:
    """What the limiter decided for a refused call: its limit, caller key and the wait it is
    told (`advertised_wait` of the limiter's)."""

    __slots__ = ("key", "limit", "wait")

    def __init__(self, limit: RateLimit, key: str, wait: float) -> None:
        self.limit = limit
        self.key = key
        self.wait = advertised_wait(wait)

    def error(self) -> RateLimitError:
        """The error the call ends with (the same one the limiter's ``check`` raises)."""
        return RateLimitError(limit=self.limit.limit, window=self.limit.window,
                              retry_after=self.wait)

    def cache_key(self) -> tuple[object, ...]:
        """What the refusal's status depends on (besides the request id)."""
        return (self.limit.limit, self.limit.window, self.limit.burst,
                round(self.wait * 1000.0))


class Refusal(Protocol):
    """A refused call as `RejectionStatuses` and `RejectionLog` see it: a
    rate-limit `Rejection`, or a concurrency-limit one."""

    key: str
    wait: float

    def error(self) -> RateLimitError: ...

    def cache_key(self) -> tuple[object, ...]: ...


class RejectionStatuses:
    """The rich status of a refusal, built once per ``cache_key()`` (limit and advertised
    wait) and reused.

    Only the request id differs between two refusals with the same limit and wait: it is
    added to the cached status per call (`octollm_grpc.status.StatusTemplate`). The
    cache holds at most ``size`` entries (the least recently used go first).
    """

    def __init__(self, *, domain: str = DEFAULT_DOMAIN, size: int = 256) -> None:
        self._domain = domain
        self._size = size
        self._cache: OrderedDict[tuple[object, ...], StatusTemplate] = OrderedDict()
        self._lock = threading.Lock()

    def status(self, rejection: Refusal, request_id: str | None) -> RichStatus:
        """The status that ends the refused call, with ``request_id`` in ``RequestInfo``."""
        key = rejection.cache_key()
        with self._lock:
            template = self._cache.get(key)
            if template is not None:
                self._cache.move_to_end(key)
        if template is None:
            template = StatusTemplate(to_status(rejection.error(), domain=self._domain))
            with self._lock:
                self._cache[key] = template
                if len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        return template.with_request_id(request_id)


class RejectionLog:
    """Rate-limit rejections logged per caller key and interval, with the count.

    The first refusal of a caller is logged at once (count 1); the refusals that follow
    within ``interval`` seconds are counted and logged together, in one event, by the first
    refusal (of any caller) after the interval has passed; a caller still refused then starts
    its next interval. Counts still pending when the process exits are logged at exit.

    The event is ``grpc.call.rate_limited`` at ``warning`` with ``grpc_method``, ``caller``,
    ``count``, ``interval_s`` and the ``request_id`` of the refusal that wrote it. ``caller``
    is the limiter's key when it is the peer address; a key taken from request metadata
    (``key_metadata``, often an API key) is logged only as a short SHA-256 digest. At most
    ``max_keys`` callers are tracked (the oldest windows are written out first). ``event``
    names the event (the concurrency limit's refusals are ``grpc.call.shed``, keyed by
    partition).
    """

    def __init__(
        self,
        logger: CallLogger,
        *,
        interval: float = 1.0,
        secret_keys: bool = False,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
        event: str = RATE_LIMITED_EVENT,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be positive, not {max_keys!r}")
        self._logger = logger
        self._interval = interval
        self._secret = secret_keys
        self._clock = clock
        self._max_keys = max_keys
        self._event = event
        self._lock = threading.Lock()
        # Caller key -> its current interval, oldest first (so only the front can have ended).
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        _live.add(self)

    def note(self, method: str, key: str, request_id: str | None) -> None:
        """Record one refusal; writes the events that are due (this caller's first, and the
        counts of intervals that have ended)."""
        now = self._clock()
        due: list[tuple[str, str, int]] = []
        with self._lock:
            self._sweep(now, due)
            window = self._windows.get(key)
            if window is None:
                self._windows[key] = _Window(now, method)
                due.append((key, method, 1))
                while len(self._windows) > self._max_keys:
                    old_key, old = self._windows.popitem(last=False)
                    if old.pending:
                        due.append((old_key, old.method, old.pending))
            else:
                window.pending += 1
                window.method = method
        for caller, caller_method, count in due:
            self._write(caller_method, caller, count, request_id)

    def flush(self) -> None:
        """Write every pending count now (at exit, or when a test wants them)."""
        with self._lock:
            due = [(key, w.method, w.pending) for key, w in self._windows.items() if w.pending]
            self._windows.clear()
        for caller, method, count in due:
            self._write(method, caller, count, None)

    def _sweep(self, now: float, due: list[tuple[str, str, int]]) -> None:
        interval = self._interval
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if window.start + interval > now:
                return
            del self._windows[key]
            if window.pending:
                # Still being refused: log the interval's count, start the next interval.
                due.append((key, window.method, window.pending))
                self._windows[key] = _Window(now, window.method)

    def _write(self, method: str, key: str, count: int, request_id: str | None) -> None:
        caller = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:16] \
            if self._secret else key
        self._logger.rate_limited(method=method, caller=caller, count=count,
                                  interval=self._interval, request_id=request_id,
                                  event=self._event)


class _Window:
    """One caller's current interval: when it started, refusals not yet logged, the method."""

    __slots__ = ("method", "pending", "start")

    def __init__(self, start: float, method: str) -> None:
        self.start = start
        self.pending = 0
        self.method = method


_live: weakref.WeakSet[RejectionLog] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for log in list(_live):
        # A broken log at exit must not keep the others from being written.
        with contextlib.suppress(Exception):
            log.flush()
