"""Logging of failed calls with structlog, and a one-call structlog setup for services.

Each failed call gives exactly one event, ``grpc.call.failed``, with ``grpc_method``,
``grpc_code``, ``error_code``, ``request_id``, ``duration_ms`` and ``peer``. Levels follow the
seed: errors the caller caused at ``warning``, server-side errors at ``error``, unexpected
exceptions at ``critical`` with the traceback (``exc_info``). Successful calls log nothing.

While a call runs, ``request_id`` is bound in structlog's context variables, so every event
the handler logs carries it too (with ``structlog.contextvars.merge_contextvars`` in the
processor chain, as :func:`configure_logging` sets up).
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any, Literal, TextIO

import structlog

__all__ = ["FAILED_EVENT", "CallLogger", "configure_logging"]

FAILED_EVENT = "grpc.call.failed"

Level = Literal["warning", "error", "critical"]


class CallLogger:
    """Writes the one event of a failed call.

    ``logger`` is any structlog logger (default: ``structlog.get_logger("octollm_grpc.server")``).
    Request metadata is never logged, so bearer tokens cannot leak through this event.
    """

    __slots__ = ("_event", "_logger")

    def __init__(self, logger: Any = None, *, event: str = FAILED_EVENT) -> None:
        self._logger = logger if logger is not None else structlog.get_logger("octollm_grpc.server")
        self._event = event

    def failed(
        self,
        level: Level,
        *,
        method: str,
        grpc_code: str,
        error_code: str | None,
        request_id: str | None,
        duration: float,
        peer: str,
        message: str | None = None,
        exc: BaseException | None = None,
    ) -> None:
        """Log one failed call; ``exc`` (when given) is attached as ``exc_info``."""
        fields: dict[str, Any] = {
            "grpc_method": method,
            "grpc_code": grpc_code,
            "error_code": error_code,
            "request_id": request_id,
            "duration_ms": round(duration * 1000.0, 3),
            "peer": peer,
        }
        if message is not None:
            fields["message"] = message
        if exc is not None:
            fields["exc_info"] = exc
        getattr(self._logger, level)(self._event, **fields)


# structlog's context variable for "request_id", learnt from the first bind. structlog keeps
# one variable per key for the life of the process, so setting it directly is what
# bind_contextvars does, without its per-call key formatting, lookup and dict of tokens.
_request_id_var: list[contextvars.ContextVar[Any]] = []


def bind_request_id(request_id: str) -> contextvars.Token[Any]:
    """Bind ``request_id`` for structlog's ``merge_contextvars``; returns the reset token."""
    if _request_id_var:
        return _request_id_var[0].set(request_id)
    token = structlog.contextvars.bind_contextvars(request_id=request_id)["request_id"]
    _request_id_var.append(token.var)
    return token


def unbind_request_id(token: contextvars.Token[Any]) -> None:
    """Undo :func:`bind_request_id` (tolerates being called from another context)."""
    try:
        token.var.reset(token)
    except (ValueError, RuntimeError):
        structlog.contextvars.unbind_contextvars("request_id")


def configure_logging(
    json: bool | None = None,
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for a service: JSON lines in production, readable in a terminal.

    ``json=None`` picks JSON unless ``stream`` (default ``sys.stderr``) is a terminal. Events
    get the bound context variables (``request_id``), the level, an ISO UTC timestamp and,
    for exceptions, the rendered traceback. Events below ``level`` are dropped cheaply.

    Loggers are cached on first use (structlog's production setting): a logger keeps the
    output it first wrote to, so call this once at start-up, before serving.
    ``structlog.testing.capture_logs`` still captures their events.
    """
    out = stream if stream is not None else sys.stderr
    if json is None:
        isatty = getattr(out, "isatty", None)
        json = not (callable(isatty) and isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if json:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
