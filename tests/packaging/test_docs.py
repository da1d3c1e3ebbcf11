"""The README and the docs pages: their examples run as written, and the README stays short."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme import DOCS, README, run_examples, section_examples

ROOT = README.parent



def section_blocks(section: str, language: str, path: Path = README) -> list[str]:
    """The ```language blocks of a marked section (``section_examples`` does ```python)."""
    text = path.read_text(encoding="utf-8")
    body = text.split(f"<!-- {section}:begin -->", 1)[1].split(f"<!-- {section}:end -->", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", body, flags=re.S)


def test_readme_is_one_screen_plus_links() -> None:
    """At most 400 lines, starting with what a newcomer needs: install, then use it."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 400
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:2] == ["## Install", "## Use it in your own service"]


def test_readme_and_docs_links_resolve() -> None:
    """Every relative link of the README and of the pages names a file that exists."""
    for page in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.exists(), f"{page.name}: {target}"


def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    """The proto, the generate command and the Python of "Use it in your own service" work."""
    (proto,) = section_blocks("quickstart", "proto")
    (command,) = section_blocks("quickstart", "sh")
    (program,) = section_examples("quickstart")
    named = re.search(r"`(protos/[\w/]+\.proto)`", README.read_text()).group(1)
    (tmp_path / named).parent.mkdir(parents=True)
    (tmp_path / named).write_text(proto)
    # The command as a user runs it, with this venv's `octollm-grpc` on PATH.
    bin_dir = Path(sys.executable).parent
    subprocess.run(["bash", "-euc", command], cwd=tmp_path, check=True, timeout=120,
                   env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True)
    run = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60,
                         env={"PYTHONPATH": f"{tmp_path / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    printed = [line for line in run.stdout.splitlines() if "grpc.call.failed" not in line]
    assert printed == ["StatusCode.NOT_FOUND t-42", "QUOTA_SPENT monthly task quota spent"]
    # The server logged each failure once, on stderr (the program has not configured structlog).
    assert run.stderr.count("grpc.call.failed") == 2
    assert "grpc.call.failed" not in run.stdout


def test_error_model_examples_run() -> None:
    """docs/errors.md: the hierarchy, the by-hand encode/decode and registering a class."""
    assert len(section_examples("errors", DOCS / "errors.md")) == 3
    # In a fresh interpreter: the last example registers a class for good (process-wide).
    run = subprocess.run(
        [sys.executable, "-c", "from tests.readme import DOCS, run_examples, section_examples\n"
         "lines, _ = run_examples(section_examples('errors', DOCS / 'errors.md'))\n"
         "print('\\n'.join(lines))"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "TASK_NOT_FOUND NOT_FOUND {'task_id': 't-42'} None",
        "RATE_LIMIT_EXCEEDED RESOURCE_EXHAUSTED {'limit': 100, 'window': 60} 30",
        "VALIDATION_ERRORS INVALID_ARGUMENT "
        "{'errors': [{'field': 'priority', 'message': 'must be 1..10'}]} None",
        "TaskNotFoundError t-42 Task t-42 not found",
        "RESOURCE_EXHAUSTED",
    ]


def test_sample_service_python_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/service.md: the example starts the sample service and catches its typed error."""
    monkeypatch.chdir(ROOT)  # `python -m server` runs from the repository root, as it says
    (example,) = section_examples("service-python", DOCS / "service.md")
    lines, _ = run_examples([example])
    assert lines == ["TASK_STATUS_PENDING", "no-such-task StatusCode.NOT_FOUND"]


# The pages of this change; pages other changes add bring their own example tests.
PAGES = ["index.md", "errors.md", "own-errors.md", "server.md", "client.md", "logging.md",
         "architecture.md", "configuration.md", "service.md", "performance.md", "security.md",
         "api.md", "release.md"]


def test_every_python_block_is_run_by_a_test() -> None:
    """No untested examples: each page's ```python blocks sit in a section a test runs."""
    tested = {  # page -> the marked sections whose python blocks a test runs
        "README.md": ["quickstart", "own-errors"],
        "errors.md": ["errors"],
        "own-errors.md": ["own-errors"],
        "server.md": ["server"],
        "client.md": ["client"],
        "service.md": ["service-python"],
    }
    for page in [README, *(DOCS / name for name in PAGES)]:
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
        covered = [b for s in tested.get(page.name, []) for b in section_examples(s, page)]
        assert sorted(blocks) == sorted(covered), page.name


def test_configuration_page_shows_the_real_flags() -> None:
    """docs/configuration.md's flag list is what `python -m server --help` prints today."""
    (shown,) = section_blocks("server-help", "text", DOCS / "configuration.md")
    run = subprocess.run([sys.executable, "-m", "server", "--help"], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=60,
                         env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    assert shown == run.stdout


def test_performance_page_is_what_the_benchmarks_write() -> None:
    """docs/performance.md holds benchmarks/readme.py's intro and results/latest.md, unedited."""
    from benchmarks import readme

    page = (DOCS / "performance.md").read_text(encoding="utf-8")
    latest = (ROOT / "benchmarks" / "results" / "latest.md").read_text(encoding="utf-8")
    assert readme.section(latest) in page, "run: python -m benchmarks --update-readme"
