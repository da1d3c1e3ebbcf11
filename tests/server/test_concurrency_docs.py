"""The concurrency limit's example on the server page runs and shows a refusal."""

from __future__ import annotations

from tests.readme import DOCS, run_examples, section_examples


def test_concurrency_example_runs_and_refuses_the_second_call() -> None:
    """With the one place taken, the second call is a RateLimitError with retry advice; the
    first completes and its place is given back."""
    examples = section_examples("concurrency", DOCS / "server.md")
    assert len(examples) == 1
    lines, _ = run_examples(examples)
    assert lines == ["RateLimitError RESOURCE_EXHAUSTED True", "b'first' 0"]
