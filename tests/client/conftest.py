"""Fixtures of the client tests: a fake clock and a Prometheus registry per test."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake monotonic clock."""
    return FakeClock()


@pytest.fixture
def registry() -> CollectorRegistry:
    """A Prometheus registry of the test's own."""
    return CollectorRegistry()
