"""Run the Python examples of one README or docs/ section, as a reader would paste them."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = README.parent / "docs"


def section_examples(section: str, path: Path = README) -> list[str]:
    """The ```python blocks between ``<!-- section:begin -->`` and ``<!-- section:end -->``.

    ``path`` is the markdown file (the README by default; pass ``DOCS / "page.md"`` for a page).
    """
    text = path.read_text(encoding="utf-8")
    body = text.split(f"<!-- {section}:begin -->", 1)[1].split(f"<!-- {section}:end -->", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def run_examples(examples: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Execute each example in a fresh namespace; return the printed lines and the log events."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), capture_logs() as logs:
        for source in examples:
            exec(compile(source, str(README), "exec"), {"__name__": "readme_example"})
    return out.getvalue().splitlines(), logs
