"""The library's structlog loggers: stderr, not stdout, until the program configures structlog.

structlog's defaults print to stdout, where the library's events would mix with the
program's own output. Like the standard library's ``logging``, ours go to stderr unless
structlog is configured; once it is (``structlog.configure``, ``configure_logging``, or
``structlog.testing.capture_logs``), every event goes through that configuration.
"""

from __future__ import annotations

import sys
from typing import Any

import structlog


class _Logger:
    """A structlog logger that picks its target on each use (configuration may come later)."""

    __slots__ = ("_configured", "_name", "_stderr")

    def __init__(self, name: str) -> None:
        self._name = name
        self._configured: Any = structlog.get_logger(name)
        self._stderr: Any = None

    def _target(self) -> Any:
        if structlog.is_configured():
            return self._configured
        stderr = self._stderr
        if stderr is None:
            # sys.stderr is looked up when first needed, so a redirected stderr is honoured.
            stderr = self._stderr = structlog.wrap_logger(
                structlog.PrintLogger(sys.stderr))
        return stderr

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


def get_logger(name: str) -> Any:
    """A logger named ``name`` that writes to stderr while structlog is not configured.

    Args:
        name: The logger's name (``logger_name`` in its events).

    Returns:
        A structlog-compatible logger (``info``, ``warning``, ``bind``, ...).
    """
    return _Logger(name)
