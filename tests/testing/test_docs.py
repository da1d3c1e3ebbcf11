"""docs/testing-kit.md: its examples run as written, and its test file passes under pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from tests.readme import DOCS, run_examples, section_examples

PAGE = DOCS / "testing-kit.md"


def test_serve_example_prints_what_the_page_says() -> None:
    """The serve/FaultInjector example runs and prints the lines the page shows."""
    examples = section_examples("testing-kit-serve", PAGE)
    assert len(examples) == 1
    lines, _ = run_examples(examples)
    assert lines == [
        "UNAVAILABLE CAPACITY_EXCEEDED {}",
        "NOT_FOUND TASK_NOT_FOUND {'task_id': 'task-7'}",
        "[('fail', '/demo.Tasks/Get'), ('pass', '/demo.Tasks/Get')]",
    ]


def _pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_PLUGINS", "PYTEST_ADDOPTS")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_pages_test_file_passes_with_the_plugin_from_its_entry_point(
        tmp_path: Path) -> None:
    """The page's test file, alone in a directory, passes: the fixtures come from the plugin.

    The directory has no conftest and plugin environment variables are cleared, so only the
    ``pytest11`` entry point ``octollm_grpc`` can have brought the fixtures. A test that uses
    ``grpc_target`` without defining ``grpc_handlers`` errors, saying what to do.
    """
    (plugin,) = [ep for ep in entry_points(group="pytest11") if ep.name == "octollm_grpc"]
    assert plugin.value == "octollm_grpc.testing.pytest_plugin"
    examples = section_examples("testing-kit-pytest", PAGE)
    assert len(examples) == 1
    (tmp_path / "test_tasks.py").write_text(examples[0], encoding="utf-8")
    (tmp_path / "test_forgot_handlers.py").write_text(
        "def test_needs_handlers(grpc_target):\n    pass\n", encoding="utf-8")
    run = _pytest(tmp_path, "test_tasks.py", "test_forgot_handlers.py")
    assert "4 passed, 1 error" in run.stdout, run.stdout + run.stderr
    assert "define a `grpc_handlers` fixture" in run.stdout
