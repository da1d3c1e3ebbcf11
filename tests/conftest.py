"""Shared fixtures: real servers on port 0, sync and asyncio, and a runner for async tests.

Async tests are plain ``async def test_...`` functions: the hook below runs each in a fresh
event loop (no plugin needed).
"""

from __future__ import annotations

import asyncio
import inspect

import pytest


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
