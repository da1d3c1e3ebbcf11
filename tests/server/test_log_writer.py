"""The background log writer: order, nothing lost, bounded queue, broken streams, fork, exit."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import structlog
import structlog.testing

from octollm_grpc.observability._logs import FLUSH_INTERVAL, LineWriter
from octollm_grpc.server import CallLogger, configure_logging, flush_logs


def test_lines_from_many_threads_all_arrive_in_order() -> None:
    """8 threads x 500 lines: every line once, each thread's lines in the order written."""
    out = io.StringIO()
    writer = LineWriter(out, max_pending=10_000)
    barrier = threading.Barrier(8)

    def produce(worker: int) -> None:
        barrier.wait()
        for i in range(500):
            writer.msg(f"{worker} {i}")

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.flush()
    seen: dict[int, list[int]] = {}
    for line in out.getvalue().splitlines():
        worker, i = map(int, line.split())
        seen.setdefault(worker, []).append(i)
    assert {w: len(v) for w, v in seen.items()} == {w: 500 for w in range(8)}
    assert all(v == sorted(v) for v in seen.values())
    assert writer.lost == 0


def test_the_background_thread_writes_without_a_flush() -> None:
    """A queued line reaches the stream by itself within a few intervals."""
    out = io.StringIO()
    writer = LineWriter(out)
    writer.msg("by itself")
    deadline = time.monotonic() + 50 * FLUSH_INTERVAL
    while "by itself" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(FLUSH_INTERVAL / 4)
    assert out.getvalue() == "by itself\n"


def test_a_full_queue_is_written_by_the_caller() -> None:
    """At max_pending lines the producer drains the queue itself: memory stays bounded."""
    out = io.StringIO()
    writer = LineWriter(out, max_pending=3)
    for i in range(1000):
        writer.msg(str(i))
        assert len(writer._lines) < 3
    writer.flush()
    assert out.getvalue().splitlines() == [str(i) for i in range(1000)]


def test_a_broken_stream_loses_lines_visibly_and_never_raises() -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    writer = LineWriter(Broken(), max_pending=2)
    writer.msg("one")
    writer.msg("two")  # drains in this thread: must not raise
    writer.flush()
    assert writer.lost == 2
    with pytest.raises(ValueError, match="max_pending"):
        LineWriter(io.StringIO(), max_pending=0)


def test_scalar_events_render_later_others_at_once(restore_structlog: None) -> None:
    """An event of scalars is rendered at write time (same JSON as structlog's); one holding a
    mutable value is rendered when logged, so later changes to it do not leak in."""
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    log = structlog.get_logger()
    items = ["before"]
    log.warning("scalars", n=1, x=0.5, flag=True, none=None, text="é")
    log.warning("mutable", items=items)
    items.append("after")
    flush_logs()
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert list(first) == ["n", "x", "flag", "none", "text", "event", "level", "timestamp"]
    assert first["text"] == "é" and first["level"] == "warning"
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert second["items"] == ["before"]


def test_background_false_writes_in_the_calling_thread(restore_structlog: None) -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out, background=False)
    structlog.get_logger().info("at once", k="v")
    line = json.loads(out.getvalue())
    assert line["event"] == "at once" and line["timestamp"].endswith("Z")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_does_not_write_its_parents_lines(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    with path.open("a", encoding="utf-8") as stream:
        writer = LineWriter(stream)
        writer.msg("queued by the parent")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                writer.msg("from the child")
                writer.flush()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        writer.flush()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert sorted(lines) == ["from the child", "queued by the parent"]


def test_queued_lines_are_written_at_exit(tmp_path: Path) -> None:
    """A process that exits normally writes what it queued, with no flush of its own."""
    path = tmp_path / "exit.log"
    code = (
        "import structlog, sys\n"
        "from octollm_grpc.server import configure_logging\n"
        f"configure_logging(json=True, stream=open({str(path)!r}, 'w'))\n"
        "for i in range(100):\n"
        "    structlog.get_logger().warning('bye', i=i)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   cwd=Path(__file__).resolve().parents[2])
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["i"] for line in lines] == list(range(100))


def test_timestamps_are_iso_utc_with_microseconds() -> None:
    from octollm_grpc.observability._logs import _iso_utc

    assert _iso_utc(0.0) == "1970-01-01T00:00:00.000000Z"
    assert _iso_utc(1764342014.5) == "2025-11-28T15:00:14.500000Z"
    assert _iso_utc(1764342015.25) == "2025-11-28T15:00:15.250000Z"  # the next second
    assert _iso_utc(1764342014.75) == "2025-11-28T15:00:14.750000Z"  # and back again


def _fail_once(logger: CallLogger) -> None:
    logger.failed("warning", method="/t.S/M", grpc_code="NOT_FOUND", error_code="TASK_NOT_FOUND",
                  request_id="r-1", duration=0.001, peer="ipv4:127.0.0.1:1")


def test_call_logger_keeps_following_structlog(restore_structlog: None) -> None:
    """CallLogger keeps structlog's cached logger once structlog has cached it; capture_logs
    still sees its events; without caching, a new configuration is followed at once."""
    out = io.StringIO()
    configure_logging(json=True, stream=out)  # caches loggers on first use
    logger = CallLogger()
    _fail_once(logger)
    with structlog.testing.capture_logs() as captured:
        _fail_once(logger)
    assert [event["event"] for event in captured] == ["grpc.call.failed"]
    flush_logs()
    assert [json.loads(line)["request_id"] for line in out.getvalue().splitlines()] == ["r-1"]

    first, second = io.StringIO(), io.StringIO()
    structlog.configure(processors=[structlog.processors.JSONRenderer()],
                        logger_factory=structlog.PrintLoggerFactory(first),
                        cache_logger_on_first_use=False)
    logger = CallLogger()
    _fail_once(logger)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(second))
    _fail_once(logger)
    assert len(first.getvalue().splitlines()) == len(second.getvalue().splitlines()) == 1
