"""Shared fixtures: real servers on port 0, sync and asyncio, and a runner for async tests.

Async tests are plain ``async def test_...`` functions: the hook below runs each in a fresh
event loop (no plugin needed).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import Phase, settings

from octollm_grpc import codes
from octollm_grpc._core.budget import RetryBudget
from octollm_grpc.client._breaker import ChannelBreakers

pytest_plugins = ["pytester"]  # tests/test_async_hook.py checks the hook below in a sandbox

# `make mutation` (--hypothesis-profile=mutation): the same examples on every run, so a mutant's
# verdict never depends on luck, and no shrinking (a failure is all a mutation run needs).
settings.register_profile("mutation", derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.generate])


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests to completion in their own event loop."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        funcargs = pyfuncitem.funcargs
        names = pyfuncitem._fixtureinfo.argnames
        kwargs = {name: funcargs[name] for name in names}
        asyncio.run(pyfuncitem.obj(**kwargs))
        return True
    return None


@pytest.fixture(autouse=True)
def _restore_process_wide_state() -> Iterator[None]:
    """Every test leaves the process-wide registries as it found them, whatever the order.

    The error-class registry (``codes.register``), the budgets and breaker groups shared per
    target (a test's drained budget or open breaker would meet a later test whose server got
    the same port), structlog's configuration and the root logger. These are the library's
    own private tables: no public API removes an entry, and none should exist for users.
    """
    by_class, by_error_code = dict(codes._by_class), dict(codes._by_error_code)
    budgets, breakers = dict(RetryBudget._shared), dict(ChannelBreakers._shared)
    log_config = structlog.get_config()
    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    yield
    with codes._lock:
        for table, saved in ((codes._by_class, by_class),
                             (codes._by_error_code, by_error_code)):
            table.clear()
            table.update(saved)
        codes._resolved.clear()
    for shared, saved_shared in ((RetryBudget._shared, budgets),
                                 (ChannelBreakers._shared, breakers)):
        shared.clear()
        shared.update(saved_shared)
    structlog.configure(**log_config)
    root.setLevel(root_level)
    root.handlers[:] = root_handlers


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    """Put structlog's configuration back after a test that configures it globally."""
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)
