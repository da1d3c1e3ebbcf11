"""Logging of failed calls with structlog, and a one-call structlog setup for services.

Each failed call gives exactly one event, ``grpc.call.failed``, with ``grpc_method``,
``grpc_code``, ``error_code``, ``request_id``, ``duration_ms``, ``peer`` (unless the
[`CallLogger`][octollm_grpc.server.CallLogger] leaves it out) and, for errors of the hierarchy,
their ``message``. Levels
follow the standard: errors the caller caused at ``warning``, server-side errors at ``error``,
unexpected exceptions at ``critical`` with the traceback (``exc_info``). Successful calls log
nothing.

While a call runs, ``request_id`` is bound in structlog's context variables, so every event
the handler logs carries it too (with ``structlog.contextvars.merge_contextvars`` in the
processor chain, as [`configure_logging`][octollm_grpc.server.configure_logging] sets up).
"""

from __future__ import annotations

import atexit
import collections
import contextvars
import json as jsonlib
import logging
import os
import sys
import threading
import time
from typing import Any, Literal, TextIO

import structlog
from structlog.contextvars import bind_contextvars, unbind_contextvars

from octollm_grpc import codes
from octollm_grpc._core.log import get_logger
from octollm_grpc.errors import OctoLLMError
from octollm_grpc.observability import _otel as otel

__all__ = [
    "FAILED_EVENT",
    "FLUSH_INTERVAL",
    "RATE_LIMITED_EVENT",
    "CallLogger",
    "LineWriter",
    "configure_logging",
    "flush_logs",
    "level_for_exception",
]

FAILED_EVENT = "grpc.call.failed"
#: The aggregated event of rate-limit refusals (one per caller and interval, with the count).
RATE_LIMITED_EVENT = "grpc.call.rate_limited"

Level = Literal["warning", "error", "critical"]


def level_for_exception(exc: BaseException, mapping: codes.ErrorMapping) -> Level:
    """The standard's levels: client errors warning, server errors error, the unexpected
    critical (the server stack and the FastAPI handlers log with it)."""
    if mapping is codes.UNEXPECTED:
        return "critical"
    if isinstance(exc, OctoLLMError):
        return "warning" if mapping.client_error else "error"
    return "error" if mapping is codes.BUILTIN_TIMEOUT else "critical"


class CallLogger:
    """Writes the one event of a failed call.

    ``logger`` is any structlog logger (default: ``get_logger("octollm_grpc.server")``).
    Request metadata is never logged, so bearer tokens cannot leak through this event.

    ``peer=False`` leaves the caller's address out of the event. On a busy ``grpc.server``
    (sync) reading it costs more than anything else in the event: grpcio releases the GIL
    twice for it, and each release hands the GIL to another thread (about 70 µs of server
    CPU per failed call in the benchmark). On ``grpc.aio`` it is cheap.

    When structlog caches loggers on first use (as
    [`configure_logging`][octollm_grpc.server.configure_logging] sets it up), the
    first event takes ``logger.bind()`` and keeps it, so later reconfiguration is not seen, as
    with any cached structlog logger; otherwise each event goes through ``logger`` itself.

    Args:
        logger: A structlog logger (default: ``get_logger("octollm_grpc.server")``).
        event: The failed call's event name.
        peer: Log the caller's address.
    """

    __slots__ = ("_enabled", "_event", "_logger", "_resolved", "peer")

    def __init__(self, logger: Any = None, *, event: str = FAILED_EVENT,
                 peer: bool = True) -> None:
        self._logger = logger if logger is not None else get_logger("octollm_grpc.server")
        self._event = event
        self._resolved: Any = None
        #: enabled_for's answers, kept only for a cached logger of configure_logging's
        #: filtering class (its level is fixed when the class is made).
        self._enabled: dict[str, bool] = {}
        #: Whether the event carries ``peer`` (the stack reads it only then).
        self.peer = peer

    def failed(
        self,
        level: Level,
        *,
        method: str,
        grpc_code: str,
        error_code: str | None,
        request_id: str | None,
        duration: float,
        peer: str | None,
        message: str | None = None,
        exc: BaseException | None = None,
        principal: str | None = None,
    ) -> None:
        """Log one failed call; ``exc`` (when given) is attached as ``exc_info``; ``peer``
        ``None`` leaves the field out, and so does ``principal`` (the authenticated caller:
        a certificate's identity or a token's subject, never the credential itself)."""
        fields: dict[str, Any] = {
            "grpc_method": method,
            "grpc_code": grpc_code,
            "error_code": error_code,
            "request_id": request_id,
            "duration_ms": round(duration * 1000.0, 3),
        }
        if peer is not None:
            fields["peer"] = peer
        if message is not None:
            fields["message"] = message
        if principal is not None:
            fields["principal"] = principal
        if exc is not None:
            fields["exc_info"] = exc
        logger = self._resolved
        getattr(logger if logger is not None else self._target(), level)(self._event, **fields)

    def rate_limited(
        self, *, method: str, caller: str, count: int, interval: float,
        request_id: str | None, event: str = RATE_LIMITED_EVENT,
    ) -> None:
        """Log ``count`` rate-limit refusals of ``caller`` (one event per interval), at
        ``warning``: ``grpc.call.rate_limited`` (see `octollm_grpc.server._shedding`), or
        ``event`` (``grpc.call.shed`` for the concurrency limit, ``caller`` its partition)."""
        self._target().warning(
            event, grpc_method=method, grpc_code="RESOURCE_EXHAUSTED",
            error_code="RATE_LIMIT_EXCEEDED", caller=caller, count=count,
            interval_s=interval, request_id=request_id)

    def _target(self) -> Any:
        # structlog's lazy proxy re-dispatches every call (about 1 us an event once cached,
        # 3.5 us when not). Its documented remedy for a logger used often is a local logger
        # from ``bind()``; we take it only when structlog caches loggers on first use (its
        # production setting, which freezes the proxy the same way). Otherwise each event
        # goes through the logger as given, so reconfiguring (e.g. capture_logs) is seen.
        logger = self._resolved
        if logger is None:
            logger = self._logger
            if structlog.get_config()["cache_logger_on_first_use"]:
                bind = getattr(logger, "bind", None)
                if callable(bind):
                    logger = bind()
                self._resolved = logger
        return logger

    def enabled_for(self, level: Level) -> bool:
        """Whether an event at ``level`` would be written (``False`` only for a logger that
        says it is set above it: a structlog filtering logger, or a ``structlog.stdlib``
        logger over a stdlib logger); when not, the stack skips building the event."""
        known = self._enabled.get(level)
        if known is not None:
            return known
        logger = self._target()
        # structlog's own name; before structlog 26 its stdlib BoundLogger had only the stdlib
        # logger's (isEnabledFor), with the same numeric levels.
        check = getattr(logger, "is_enabled_for", None) or getattr(logger, "isEnabledFor", None)
        if check is None:
            return True
        try:
            enabled = bool(check(_LEVELS[level]))
        except Exception:  # noqa: BLE001 - a logger that cannot say: log, as before
            return True
        # Other loggers may answer differently later (a stdlib logger's level can change).
        if logger is self._resolved and type(logger) in _filtering_classes:
            self._enabled[level] = enabled
        return enabled


_LEVELS = {"warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}
#: The wrapper classes configure_logging made: each filters at a level fixed for good.
_filtering_classes: set[type] = set()


#: The context variable structlog keeps ``request_id`` in, once seen to hold the bare value.
_request_id_var: contextvars.ContextVar[Any] | None = None


def bind_request_id(request_id: str) -> contextvars.Token[Any]:
    """Bind ``request_id`` for structlog's ``merge_contextvars``; returns the reset token.

    The first bind goes through structlog's public ``bind_contextvars``; its token names the
    variable (``Token.var``). When that variable holds the id as it is (structlog keeps one
    variable per key), later binds set it directly: ``bind_contextvars`` costs several times
    as much (it formats the key and looks the variable up on every call). Should structlog
    keep its context any other way, every bind goes through ``bind_contextvars``.
    """
    global _request_id_var
    var = _request_id_var
    if var is not None:
        return var.set(request_id)
    token: contextvars.Token[Any] = bind_contextvars(request_id=request_id)["request_id"]
    if token.var.get() is request_id:
        _request_id_var = token.var
    return token


def unbind_request_id(token: contextvars.Token[Any]) -> None:
    """Undo `bind_request_id` (tolerates being called from another context)."""
    try:
        # The stdlib's reset through the token's own variable: what reset_contextvars does,
        # without its key formatting and lookup, and right however structlog keeps its vars.
        token.var.reset(token)
    except (ValueError, RuntimeError):
        # The token belongs to another context (or was used): clear the key here instead.
        unbind_contextvars("request_id")


class LineWriter:
    """Writes log lines to ``stream`` from a background thread, in order, in batches.

    A request thread only appends its line to a queue: no lock, no system call, no thread to
    wake. Every `FLUSH_INTERVAL` seconds one background thread (shared by all writers)
    writes what has piled up with one ``write`` and one ``flush``. Writing and flushing each line
    under a lock on the request thread, as ``print`` loggers do, or waking a writer per line,
    hands the GIL back and forth on every failed call: on a busy server that costs several
    times the work of the line itself.

    A queued line is a rendered ``str``, or an event ``dict`` of scalar values that is
    rendered as JSON when written (see
    [`configure_logging`][octollm_grpc.server.configure_logging]), so the rendering is done in
    batches too.

    Nothing is dropped and the order is kept: lines are written first in, first out, one
    drain at a time; once ``max_pending`` lines wait, the caller drains them itself;
    `flush` (run for every writer at interpreter exit) writes everything queued so far.
    If ``stream`` fails, the batch is counted in `lost` and the writer carries on. A
    forked child starts with an empty queue and its own background thread.
    """

    def __init__(self, stream: TextIO, *, max_pending: int = 4096) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending!r}")
        self.stream = stream
        self.max_pending = max_pending
        #: Lines the stream refused (its write or flush raised).
        self.lost = 0
        self._closed = False
        self._reset()
        with _writers_lock:
            _writers.append(self)

    def close(self) -> None:
        """Write what is queued and leave the background thread's list (the stream is not
        closed: it is the caller's). Lines queued afterwards are written at once."""
        self._closed = True
        with _writers_lock:
            if self in _writers:
                _writers.remove(self)
        self.flush()

    def _reset(self) -> None:
        self._lines: collections.deque[str | dict[str, Any]] = collections.deque()
        self._drain_lock = threading.Lock()

    # structlog's logger protocol: one method per level, each queues the line.
    def msg(self, message: str | dict[str, Any]) -> None:
        """Queue one line; it is written within `FLUSH_INTERVAL` seconds."""
        if _background is None:
            _start_background()
        lines = self._lines
        lines.append(message)
        if len(lines) >= self.max_pending or self._closed:
            self.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def flush(self) -> None:
        """Write every line queued so far, in this thread; returns once they are written."""
        with self._drain_lock:
            lines = self._lines
            if not lines:
                return
            pop = lines.popleft
            # Only what is queued now: producers that keep appending cannot hold us here.
            batch = [pop() for _ in range(len(lines))]
            try:
                text = "\n".join(
                    line if type(line) is str else _render_json(line)  # type: ignore[arg-type]
                    for line in batch)
                self.stream.write(text + "\n")
                self.stream.flush()
            except Exception:  # noqa: BLE001 - a broken stream must not raise into a request
                self.lost += len(batch)  # thread, nor stop the background thread


#: How often the background thread writes what the writers have queued, in seconds.
FLUSH_INTERVAL = 0.1

_writers: list[LineWriter] = []
_writers_lock = threading.Lock()
_background: threading.Thread | None = None


def flush_logs() -> None:
    """Write every line queued so far by every `LineWriter` (as at exit)."""
    with _writers_lock:
        writers = list(_writers)
    for writer in writers:
        writer.flush()


def _run_background() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        flush_logs()


def _start_background() -> None:
    global _background
    with _writers_lock:
        if _background is None:
            thread = threading.Thread(target=_run_background, name="octollm-log-writer",
                                      daemon=True)
            thread.start()
            _background = thread


def _after_fork_in_child() -> None:
    # The parent writes the lines it had queued; the child must not write them again.
    global _background, _writers_lock
    _background = None
    _writers_lock = threading.Lock()
    for writer in _writers:
        writer._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(flush_logs)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _fallback(value: Any) -> Any:
    # structlog's JSONRenderer fallback: the object's __structlog__(), else its repr.
    method = getattr(value, "__structlog__", None)
    return method() if callable(method) else repr(value)


# Compact and ASCII-only: the same text orjson gives for an ASCII line, so the two agree.
_encode_stdlib = jsonlib.JSONEncoder(default=_fallback, separators=(",", ":")).encode

_orjson: Any
try:  # the [orjson] extra: about ten times faster than the standard library's encoder
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised in a subprocess test
    _orjson = None


def _encode_json(event: dict[str, Any]) -> str:
    """``event`` as one line of compact JSON, non-ASCII characters escaped (``\\uXXXX``), so
    the line can be written to any text stream. orjson when installed, else the stdlib."""
    if _orjson is not None:
        try:
            text: str = _orjson.dumps(event, default=_fallback).decode()
        except (TypeError, ValueError):  # e.g. a key that is not a str: the stdlib handles it
            return _encode_stdlib(event)
        # orjson writes UTF-8 and has no ASCII mode: a rare non-ASCII line takes the stdlib.
        if text.isascii():
            return text
    return _encode_stdlib(event)


def _dumps(event: dict[str, Any], **_options: Any) -> str:
    # structlog's JSONRenderer(serializer=...) passes its own fallback; ours is the same rule.
    return _encode_json(event)


def _render_json(event: dict[str, Any]) -> str:
    """The JSON line for ``event``; its ``timestamp`` is still the ``time.time()`` float."""
    stamp = event.get("timestamp")
    if type(stamp) is float:
        event["timestamp"] = _iso_utc(stamp)
    return _encode_json(event)


#: The last whole second formatted, and its text (one tuple: threads replace it atomically).
_second: tuple[int, str] = (-1, "")


def _iso_utc(stamp: float) -> str:
    """``2026-11-28T15:00:14.562887Z``: ISO 8601 in UTC, always with microseconds.

    Only the background writer calls this; the date and time part is formatted once a second.
    """
    global _second
    second, fraction = divmod(int(stamp * 1_000_000), 1_000_000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{fraction:06d}Z"


#: What configure_logging's JSON chain renders a stack and an exception with. Frames of this
#: module are skipped when looking for the caller's frame: the renderer runs inside
#: `_json_event`, not straight from structlog (no event of this module asks for a stack).
_stack_info = structlog.processors.StackInfoRenderer(additional_ignores=[__name__])
_format_exc_info = structlog.processors.format_exc_info


def _json_event(logger: Any, name: str, event: dict[str, Any]) -> Any:
    """The tail of the background JSON chain in one processor: what ``add_log_level``, the
    time, ``StackInfoRenderer``, ``format_exc_info`` and the hand-off to the writer did as five
    processors, in the same order and with the same fields. One call instead of five: each
    processor is a Python call per event, and most of them only find their key absent.

    An event of scalars goes to the writer as it is, to be rendered there in a batch (nothing
    can change it meanwhile); any other is rendered now.
    """
    # add_log_level's names: warn is the stdlib's alias, exception() logs at error.
    event["level"] = "warning" if name == "warn" else "error" if name == "exception" else name
    event["timestamp"] = time.time()  # formatting it waits for _render_json
    # Both change the event in place (and return it).
    if "stack_info" in event:
        _stack_info(logger, name, event)
    if "exc_info" in event:
        _format_exc_info(logger, name, event)
    for value in event.values():
        if type(value) not in _SCALARS:
            return _render_json(event)
    return (event,), {}


def configure_logging(
    json: bool | None = None,
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    background: bool = True,
) -> None:
    """Configure structlog for a service: JSON lines in production, readable in a terminal.

    ``json=None`` picks JSON unless ``stream`` (default ``sys.stderr``) is a terminal. Events
    get the bound context variables (``request_id``), the level, an ISO UTC timestamp and,
    for exceptions, the rendered traceback. Events below ``level`` are dropped cheaply.

    ``background=True`` (the default) hands lines to a `LineWriter`: they reach
    ``stream`` in order within `FLUSH_INTERVAL` seconds, and JSON events made only of
    scalar values are rendered there, in batches. Call
    [`flush_logs`][octollm_grpc.server.flush_logs] to write what is
    queued now (it runs at interpreter exit too; a process killed outright loses at most the
    last interval's lines). ``background=False`` writes and flushes each line in the calling
    thread, as structlog's ``PrintLogger`` does.

    Loggers are cached on first use (structlog's production setting): a logger keeps the
    output it first wrote to, so call this once at start-up, before serving. Calling it again
    releases the previous writer (loggers cached under it write their lines at once).
    ``structlog.testing.capture_logs`` still captures their events.

    Args:
        json: JSON lines (``True``), readable lines (``False``), or by the stream (``None``).
        level: The lowest ``logging`` level written.
        stream: Where lines go (default ``sys.stderr``).
        background: Write from a background thread (``flush_logs`` drains it).
    """
    out = stream if stream is not None else sys.stderr
    if json is None:
        isatty = getattr(out, "isatty", None)
        json = not (callable(isatty) and isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        otel.add_trace_ids,  # a no-op without opentelemetry or outside a span
    ]
    if json and background:
        processors.append(_json_event)  # the processors below, in one
    else:
        processors += [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
        ]
        if json:
            processors += [
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ]
        else:
            processors.append(structlog.dev.ConsoleRenderer())
    wrapper_class = structlog.make_filtering_bound_logger(level)
    _filtering_classes.add(wrapper_class)
    structlog.configure(
        processors=processors,
        wrapper_class=wrapper_class,
        logger_factory=_factory(out, background),
        cache_logger_on_first_use=True,
    )


#: The writer of the current configuration; the next configure_logging closes it.
_configured: list[LineWriter] = []


def _factory(out: TextIO, background: bool) -> Any:
    flush_logs()  # what the previous configuration queued goes out first
    # Release the previous configuration's writer (and with it its stream): loggers cached
    # under it still work, writing each line at once.
    while _configured:
        _configured.pop().close()
    if not background:
        return structlog.PrintLoggerFactory(file=out)
    writer = LineWriter(out)
    _configured.append(writer)
    return lambda *_args: writer
