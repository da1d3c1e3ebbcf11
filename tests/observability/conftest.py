"""Fixtures of the observability tests: the client tests' fake clock and registry."""

from tests.client.conftest import clock, registry

__all__ = ["clock", "registry"]
