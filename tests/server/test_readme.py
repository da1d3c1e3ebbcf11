"""The server page (docs/server.md): its Python examples run as written and print what they say."""

from __future__ import annotations

from tests.readme import DOCS, run_examples, section_examples


def test_readme_server_examples_run() -> None:
    """Both examples (sync and aio) run and show the mapped errors they promise."""
    examples = section_examples("server", DOCS / "server.md")
    assert len(examples) == 2
    lines, logs = run_examples(examples)
    assert lines == [
        "StatusCode.NOT_FOUND Task task-42 not found",
        "b'task 42'",
        "AuthenticationError",
    ]
    assert [(x["log_level"], x["error_code"]) for x in logs] == [
        ("warning", "TASK_NOT_FOUND"), ("warning", "AUTHENTICATION_ERROR")]
