"""``configure_logging`` called again does not leak the previous writer and its stream."""

from __future__ import annotations

import gc
import io
import weakref

import pytest
import structlog

from octollm_grpc.server import configure_logging, flush_logs


@pytest.mark.usefixtures("restore_structlog")
def test_reconfiguring_releases_the_previous_stream() -> None:
    """Each call replaces the last writer: the old stream is released, not kept forever."""
    first = io.StringIO()
    configure_logging(json=True, stream=first)
    structlog.get_logger("t").info("to first")
    flush_logs()
    assert '"event":"to first"' in first.getvalue()
    released = weakref.ref(first)
    del first
    for _ in range(20):
        configure_logging(json=True, stream=io.StringIO())
    gc.collect()
    assert released() is None


@pytest.mark.usefixtures("restore_structlog")
def test_a_logger_cached_before_reconfiguring_still_writes() -> None:
    """A logger cached under the old configuration writes its lines (not queued forever)."""
    old = io.StringIO()
    configure_logging(json=True, stream=old)
    logger = structlog.get_logger("cached")
    logger.info("before")
    configure_logging(json=True, stream=io.StringIO())
    logger.info("after")
    assert '"event":"after"' in old.getvalue()
    assert '"event":"before"' in old.getvalue()
