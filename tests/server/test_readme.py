"""The README's server section: its Python examples run as written and print what they say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from structlog.testing import capture_logs

README = Path(__file__).resolve().parents[2] / "README.md"


def _server_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("<!-- server:begin -->", 1)[1].split("<!-- server:end -->", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_server_examples_run() -> None:
    """Both README examples (sync and aio) run and show the mapped errors they promise."""
    examples = _server_examples()
    assert len(examples) == 2
    out = io.StringIO()
    with contextlib.redirect_stdout(out), capture_logs() as logs:
        for source in examples:
            exec(compile(source, str(README), "exec"), {"__name__": "readme_example"})
    lines = out.getvalue().splitlines()
    assert lines == [
        "StatusCode.NOT_FOUND Task task-42 not found",
        "b'task 42'",
        "AuthenticationError",
    ]
    assert [(x["log_level"], x["error_code"]) for x in logs] == [
        ("warning", "TASK_NOT_FOUND"), ("warning", "AUTHENTICATION_ERROR")]
