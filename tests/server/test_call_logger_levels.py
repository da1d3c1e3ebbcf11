"""``CallLogger.enabled_for``: answers follow the logger's level, kept only where it is fixed."""

from __future__ import annotations

import io
import logging

import pytest
import structlog

from octollm_grpc.observability import _logs as logs


@pytest.mark.usefixtures("restore_structlog")
def test_configure_logging_level_filters_events_of_a_call_logger() -> None:
    """With configure_logging(level=ERROR), warnings are skipped and errors written, on every
    call (the second answer comes from the kept one)."""
    stream = io.StringIO()
    logs.configure_logging(json=True, stream=stream, level=logging.ERROR)
    call_logger = logs.CallLogger(structlog.get_logger("octollm_grpc.tests.levels"))
    for _ in range(2):
        assert call_logger.enabled_for("warning") is False
        assert call_logger.enabled_for("error") is True
        assert call_logger.enabled_for("critical") is True
    call_logger.failed("error", method="/s/M", grpc_code="INTERNAL", error_code="X",
                       request_id="r", duration=0.0, peer=None)
    logs.flush_logs()
    assert '"level":"error"' in stream.getvalue()


@pytest.mark.usefixtures("restore_structlog")
def test_a_stdlib_loggers_level_change_is_seen() -> None:
    """A cached structlog.stdlib logger asks the stdlib logger every time: its level can
    change at run time, so its answers are not kept."""
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    stdlib_logger = logging.getLogger("octollm_grpc.tests.levels.stdlib")
    stdlib_logger.setLevel(logging.ERROR)
    try:
        call_logger = logs.CallLogger(structlog.get_logger("octollm_grpc.tests.levels.stdlib"))
        assert call_logger.enabled_for("warning") is False
        stdlib_logger.setLevel(logging.WARNING)
        assert call_logger.enabled_for("warning") is True
    finally:
        stdlib_logger.setLevel(logging.NOTSET)
