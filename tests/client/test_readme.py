"""The client page (docs/client.md): its Python examples run as written and print what they say."""

from __future__ import annotations

from tests.readme import DOCS, run_examples, section_examples


def test_readme_client_examples_run() -> None:
    """Both examples (sync and aio) run: retry, typed errors, the breaker opening, as printed."""
    examples = section_examples("client", DOCS / "client.md")
    assert len(examples) == 2
    lines, logs = run_examples(examples)
    assert lines == [
        "b'task 42' [None, '1']",
        "30 100 Rate limit exceeded: 100 requests per 60s",
        "StatusCode.RESOURCE_EXHAUSTED",
        "NetworkError StatusCode.UNAVAILABLE",
        "CircuitOpenError 30",
    ]
    opened = [e for e in logs if e["event"] == "circuit_breaker_state_changed"]
    assert [(e["from_state"], e["to_state"]) for e in opened] == [("closed", "open")]
