"""The README's client section: its Python examples run as written and print what they say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from structlog.testing import capture_logs

README = Path(__file__).resolve().parents[2] / "README.md"


def _client_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("<!-- client:begin -->", 1)[1].split("<!-- client:end -->", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_client_examples_run() -> None:
    """Both examples (sync and aio) run: retry, typed errors, the breaker opening, as printed."""
    examples = _client_examples()
    assert len(examples) == 2
    out = io.StringIO()
    with contextlib.redirect_stdout(out), capture_logs() as logs:
        for source in examples:
            exec(compile(source, str(README), "exec"), {"__name__": "readme_example"})
    assert out.getvalue().splitlines() == [
        "b'task 42' [None, '1']",
        "30 100 Rate limit exceeded: 100 requests per 60s",
        "StatusCode.RESOURCE_EXHAUSTED",
        "NetworkError StatusCode.UNAVAILABLE",
        "CircuitOpenError 30",
    ]
    opened = [e for e in logs if e["event"] == "circuit_breaker_state_changed"]
    assert [(e["from_state"], e["to_state"]) for e in opened] == [("closed", "open")]
