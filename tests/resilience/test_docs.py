"""docs/resilience.md: every python example runs as written and prints what the page says."""

from __future__ import annotations

import pytest

from tests.readme import DOCS, run_examples, section_examples
from tests.resilience.llm_api import serve_llm_api

PAGE = DOCS / "resilience.md"


def test_the_seeds_llm_example_runs_against_a_real_http_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One 503 with Retry-After: 0, then the answer: retried once, the breaker stays closed."""
    with serve_llm_api() as api:
        api.fail_next(1, status=503, retry_after="0")
        monkeypatch.setenv("LLM_API_URL", api.url)
        printed, logs = run_examples(section_examples("llm-example", PAGE))
    assert printed == ["echo: Summarize the incident", "True"]
    assert api.requests == 2
    [retried] = [e for e in logs if e["event"] == "resilience.retry.retrying"]
    assert (retried["attempt"], retried["delay"], retried["error_type"]) == (
        1, 0.0, "LLM_API_ERROR")


def test_the_api_examples_print_what_the_page_says() -> None:
    """The breaker, retry, fallback, metrics and transaction examples."""
    printed, logs = run_examples(section_examples("resilience-api", PAGE))
    assert printed == [
        "CircuitState.OPEN open", "retry after 20s", "2.0",
        "done [7.0]", "not retried: [7.0]",
        "{'task_id': 't-1', 'source': 'replica'}", "{'source': 'none', 'why': 'DATABASE_ERROR'}",
        "1.0",
        "DATABASE_ERROR IntegrityError", "[('t-1', 'running')]",
    ]
    events = [e["event"] for e in logs]
    assert "circuit_breaker_state_changed" in events
    assert "resilience.fallback.trying_next" in events
    assert "resilience.transaction.rolled_back" in events
