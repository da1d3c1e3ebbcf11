"""The autouse fixture of tests/conftest.py: what one test registers, the next never sees."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


def test_process_wide_registries_are_restored_between_tests(pytester: pytest.Pytester) -> None:
    """A class registered, a budget and a breaker group made, structlog reconfigured: all gone
    for the next test (run in that order, shuffling off)."""
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(test_inner='''
import grpc
import structlog

from octollm_grpc import codes
from octollm_grpc import errors as e
from octollm_grpc.client import BreakerSettings, RetryBudget
from octollm_grpc.client._breaker import ChannelBreakers


class Leaky(e.OctoLLMError):
    error_code = "TEST_LEAKY"


def test_1_leaves_things_behind():
    codes.register(Leaky, grpc.StatusCode.ABORTED, 409)
    codes.register(e.ResourceError, grpc.StatusCode.ABORTED, 409)
    RetryBudget.for_target("leak:1").on_failure()
    ChannelBreakers.for_target("leak:1", BreakerSettings(failure_threshold=1))
    structlog.configure(processors=[])


def test_2_finds_nothing():
    assert codes.class_for_error_code("TEST_LEAKY") is None
    assert Leaky not in [cls for cls, _ in codes.registered()]
    assert codes.mapping_for(Leaky("x")).error_code == "UNKNOWN_ERROR"  # OctoLLMError's row
    assert codes.mapping_for(Leaky("x")).grpc_code is grpc.StatusCode.UNKNOWN
    assert codes.mapping_for(e.ResourceError("x")).grpc_code is grpc.StatusCode.UNAVAILABLE
    assert RetryBudget.for_target("leak:1").tokens == 10
    assert structlog.get_config()["processors"] != []
''')
    result = pytester.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2)
