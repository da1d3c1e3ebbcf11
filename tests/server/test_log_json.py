"""JSON log lines: orjson when installed, the standard library otherwise, the same text."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys

import orjson
import pytest
import structlog

from octollm_grpc.observability import _logs as logs

EVENTS = [
    {"event": "grpc.call.failed", "grpc_code": "NOT_FOUND", "duration_ms": 0.125,
     "request_id": "r-1", "peer": None, "count": 3, "ok": False},
    {"event": "grpc.call.failed", "message": "Task \u00e9t\u00e9 \U0001F600 not found\n\x00"},
    {"event": "x", "nested": {"a": [1, 2.5, "b"]}, 7: "non-str key"},
]


@pytest.mark.parametrize("event", EVENTS)
def test_orjson_and_stdlib_lines_are_the_same_text(event: dict[object, object]) -> None:
    """Both encoders give one identical line: compact, ASCII only, valid JSON."""
    fast = logs._encode_json(dict(event))  # type: ignore[arg-type]
    slow = logs._encode_stdlib(dict(event))
    assert fast == slow
    assert fast.isascii() and "\n" not in fast
    assert json.loads(fast) == json.loads(json.dumps(event))


def test_orjson_is_used_when_installed() -> None:
    """With orjson importable the module picks it up."""
    assert logs._orjson is orjson


def test_fallback_without_orjson_writes_the_same_lines() -> None:
    """orjson blocked: the library imports, and configure_logging writes the same JSON line."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'orjson':\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from octollm_grpc.observability import _logs as logs\n"
        "assert logs._orjson is None\n"
        "print(logs._encode_json({'event': 'e', 'n': 1, 'm': '\\u00e9'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == logs._encode_json({"event": "e", "n": 1, "m": "\u00e9"})
    assert done.stdout.strip() == '{"event":"e","n":1,"m":"\\u00e9"}'


@pytest.mark.parametrize("background", [True, False])
def test_configured_json_lines_parse_back(background: bool) -> None:
    """Through configure_logging, both writers give lines that parse back to the event."""
    stream = io.StringIO()
    logs.configure_logging(json=True, stream=stream, background=background)
    try:
        logs.CallLogger().failed("warning", method="/s/M", grpc_code="NOT_FOUND",
                                 error_code="TASK_NOT_FOUND", request_id="r-9",
                                 duration=0.001, peer=None, message="caf\u00e9 \U0001F600")
        logs.flush_logs()
    finally:
        logs.configure_logging(json=False)
    (line,) = stream.getvalue().splitlines()
    assert line.isascii()
    parsed = json.loads(line)
    assert parsed["message"] == "caf\u00e9 \U0001F600"
    assert parsed["request_id"] == "r-9" and math.isclose(parsed["duration_ms"], 1.0)


def _emit_events() -> None:
    """Events that use every part of the JSON chain: levels by alias, a bound context
    variable, a stack, an exception (as exc_info and through ``exception()``)."""
    logger = structlog.get_logger("octollm_grpc.tests")
    token = logs.bind_request_id("r-ctx")
    try:
        logger.warn("warned", n=1)
        logger.info("stacked", stack_info=True)
        logger.info("unstacked", stack_info=False)
        try:
            raise ValueError("boom")
        except ValueError as exc:
            logger.exception("excepted", where="handler")
            logs.CallLogger(logger).failed(
                "critical", method="/s/M", grpc_code="INTERNAL", error_code=None,
                request_id="r-1", duration=0.002, peer="ipv4:127.0.0.1:1", exc=exc)
        logger.error("plain", exc_info=False)
    finally:
        logs.unbind_request_id(token)


def test_background_json_lines_match_structlogs_own_chain() -> None:
    """The background chain (one processor for level, time, stack, exception and hand-off)
    writes the lines structlog's stock processors write (``background=False``): the same keys
    in the same order with the same values, but for the time itself."""
    lines: dict[bool, list[list[tuple[str, object]]]] = {}
    for background in (True, False):
        stream = io.StringIO()
        logs.configure_logging(json=True, stream=stream, background=background)
        try:
            _emit_events()
            logs.flush_logs()
        finally:
            logs.configure_logging(json=False)
        parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
        for event in parsed:
            assert event["timestamp"].endswith("Z")
            event["timestamp"] = "T"
        lines[background] = [list(event.items()) for event in parsed]
    assert lines[True] == lines[False]
    events = [dict(items) for items in lines[True]]
    assert [(e["event"], e["level"]) for e in events] == [
        ("warned", "warning"), ("stacked", "info"), ("unstacked", "info"),
        ("excepted", "error"), ("grpc.call.failed", "critical"), ("plain", "error")]
    assert "_emit_events" in str(events[1]["stack"]) and "stack" not in events[2]
    assert "ValueError: boom" in str(events[3]["exception"])
    assert "ValueError: boom" in str(events[4]["exception"]) and "exception" not in events[5]
    assert all(e["request_id"] in ("r-ctx", "r-1") for e in events)
