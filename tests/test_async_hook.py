"""The conftest hook that runs ``async def`` tests: it awaits them and reports their failures."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


def test_async_tests_are_awaited_and_their_failures_reported(pytester: pytest.Pytester) -> None:
    """An assert after an await fails the test; a passing one passes; none is skipped."""
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(test_inner='''
import asyncio

async def test_fails_after_await():
    await asyncio.sleep(0)
    assert 1 == 2

async def test_passes_after_await():
    await asyncio.sleep(0)
''')
    result = pytester.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_fails_after_await*assert 1 == 2*"])
