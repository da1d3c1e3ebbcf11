"""docs/server.md's authentication examples (JWT on aio, mTLS identities on sync) run as
written and print what the page says."""

from __future__ import annotations

from tests.readme import DOCS, run_examples, section_examples


def test_server_auth_examples_run() -> None:
    """Both examples run; refusals carry their reasons; the principal is in the log events."""
    examples = section_examples("server-auth", DOCS / "server.md")
    assert len(examples) == 2
    lines, logs = run_examples(examples)
    assert lines == [
        "b'task 7'",
        "StatusCode.UNAUTHENTICATED TOKEN_EXPIRED",
        "StatusCode.PERMISSION_DENIED AUTHORIZATION_ERROR",
        "b'task 8'",
        "StatusCode.PERMISSION_DENIED ['tasks.write']",
    ]
    assert [(x["error_code"], x.get("principal")) for x in logs] == [
        ("TOKEN_EXPIRED", None), ("AUTHORIZATION_ERROR", "alice"),
        ("AUTHORIZATION_ERROR", "billing.internal")]
