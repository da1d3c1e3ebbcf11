"""The "your own errors" examples (README and docs/own-errors.md) run as written."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.readme import DOCS, README, section_examples

ROOT = README.parent


def _run(program: str) -> list[str]:
    # A fresh interpreter: the examples register a class for good (process-wide).
    run = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return [line for line in run.stdout.splitlines() if "grpc.call.failed" not in line]


def test_readme_own_errors_example_prints_what_it_says() -> None:
    """The README's OrderNotFoundError crosses a real server with ResourceInfo and Help."""
    (program,) = section_examples("own-errors")
    said = re.search(r"This prints `([^`]+)`", README.read_text(encoding="utf-8"))
    assert said is not None
    assert _run(program) == [said.group(1)] == ["NOT_FOUND o-17 https://acme.example/help/orders"]


def test_own_errors_page_example_prints_what_it_says() -> None:
    """docs/own-errors.md: the details in the order sent, and what the client rebuilt."""
    page = DOCS / "own-errors.md"
    (program,) = section_examples("own-errors", page)
    shown = re.search(r"```\n(\['ErrorInfo'.*?)```", page.read_text(encoding="utf-8"), re.S)
    assert shown is not None
    assert _run(program) == shown.group(1).splitlines()
