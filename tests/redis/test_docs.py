"""docs/redis.md: its Python examples run as written, against a real Redis."""

from __future__ import annotations

import pytest

from tests.readme import DOCS, run_examples, section_examples
from tests.redis.server import RedisServer


def test_redis_page_examples_run(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas share one bucket; the aio server connects its store before serving."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    examples = section_examples("redis-examples", DOCS / "redis.md")
    assert len(examples) == 2
    printed, logs = run_examples(examples)
    assert printed == ["admitted: [True, True, False] third waits about 30 s",
                       "connected: True"]
    assert not [x for x in logs if str(x["event"]).startswith("ratelimit_store")]
