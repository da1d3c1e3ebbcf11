"""with_fallback: the seed's primary -> read replica, for any callables, and degradation."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.resilience import CircuitBreaker, with_fallback
from octollm_grpc.testing import FakeClock


class Replica:
    """A real async "database" that is down or up, counting the reads it served or refused."""

    def __init__(self, name: str, *, down: bool = False) -> None:
        self.name = name
        self.down = down
        self.calls = 0

    async def get_task(self, task_id: str) -> dict[str, str]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.down:
            raise errors.DatabaseError("query", ConnectionError(f"{self.name} unreachable"))
        return {"task_id": task_id, "served_by": self.name}

    def get_task_sync(self, task_id: str) -> dict[str, str]:
        self.calls += 1
        if self.down:
            raise errors.DatabaseError("query", ConnectionError(f"{self.name} unreachable"))
        return {"task_id": task_id, "served_by": self.name}


async def test_falls_back_to_the_replica_and_logs_a_warning() -> None:
    """Primary down: the replica answers with the same arguments; one warning names both."""
    primary, replica = Replica("primary", down=True), Replica("replica")
    get_task = with_fallback(primary.get_task, replica.get_task, on=(errors.DatabaseError,))
    with capture_logs() as logs:
        task = await get_task("t-1")
    assert task == {"task_id": "t-1", "served_by": "replica"}
    [warning] = logs
    assert warning["event"] == "resilience.fallback.trying_next"
    assert warning["log_level"] == "warning"
    assert warning["function"] == "Replica.get_task" and warning["error_type"] == "DATABASE_ERROR"


async def test_the_first_that_works_wins_and_later_ones_are_not_called() -> None:
    """A healthy primary answers; the replica is never called."""
    primary, replica = Replica("primary"), Replica("replica")
    get_task = with_fallback(primary.get_task, replica.get_task)
    assert (await get_task("t"))["served_by"] == "primary"
    assert replica.calls == 0


async def test_all_failing_raises_the_last_error() -> None:
    """Both down: "resilience.fallback.exhausted" at error, then the replica's error."""
    primary, replica = Replica("primary", down=True), Replica("replica", down=True)
    get_task = with_fallback(primary.get_task, replica.get_task, on=(errors.DatabaseError,))
    with capture_logs() as logs, pytest.raises(errors.DatabaseError, match="replica"):
        await get_task("t")
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("resilience.fallback.trying_next", "warning"), ("resilience.fallback.exhausted", "error")]


async def test_errors_outside_on_propagate_without_fallback() -> None:
    """Only ``on`` errors fall through; a bug in the primary is raised at once."""
    replica = Replica("replica")

    async def buggy(task_id: str) -> dict[str, str]:
        raise KeyError(task_id)

    with pytest.raises(KeyError):
        await with_fallback(buggy, replica.get_task, on=(errors.DatabaseError,))("t")
    assert replica.calls == 0


async def test_a_callable_behind_an_open_breaker_is_skipped_without_calling_it() -> None:
    """An open breaker's function is not called; the fallback answers at once."""
    clock = FakeClock()
    breaker = CircuitBreaker(1, 60, errors.DatabaseError, clock=clock,
                             registry=CollectorRegistry())
    primary, replica = Replica("primary", down=True), Replica("replica")
    guarded = breaker(primary.get_task)
    get_task = with_fallback(guarded, replica.get_task, on=(errors.DatabaseError,))
    assert (await get_task("a"))["served_by"] == "replica"  # this failure opens the breaker
    with capture_logs() as logs:
        assert (await get_task("b"))["served_by"] == "replica"
    assert primary.calls == 1 and clock.sleeps == []
    assert logs[0]["error_type"] == "CIRCUIT_OPEN"


async def test_a_circuit_open_error_always_falls_through() -> None:
    """Even with a narrow ``on``, CircuitOpenError moves to the next callable."""
    replica = Replica("replica")

    async def open_breaker(task_id: str) -> dict[str, str]:
        raise errors.CircuitOpenError("db-primary", 12.0)

    get_task = with_fallback(open_breaker, replica.get_task, on=(errors.DatabaseError,))
    assert (await get_task("t"))["served_by"] == "replica"


async def test_degradation_returns_a_default_or_a_function_of_the_error() -> None:
    """For non-critical reads: a default value, or degrade(error), instead of raising."""
    down = Replica("primary", down=True)
    with capture_logs() as logs:
        assert await with_fallback(down.get_task, default=None)("t") is None
    assert [(e["event"], e["log_level"], e["degraded"]) for e in logs] == [
        ("resilience.fallback.exhausted", "warning", True)]
    degraded = with_fallback(
        down.get_task, degrade=lambda error: {"served_by": "cache", "why": type(error).__name__})
    assert await degraded("t") == {"served_by": "cache", "why": "DatabaseError"}


def test_sync_callables_give_a_sync_chain() -> None:
    """All plain functions: the chain is a plain function too."""
    primary, replica = Replica("primary", down=True), Replica("replica")
    get_task = with_fallback(primary.get_task_sync, replica.get_task_sync)
    assert not asyncio.iscoroutinefunction(get_task)
    assert get_task("t")["served_by"] == "replica"
    assert with_fallback(primary.get_task_sync, default={})("t") == {}


def test_needs_a_callable_and_one_degradation_form() -> None:
    """Misuse is refused when the chain is built."""
    with pytest.raises(ValueError, match="at least one"):
        with_fallback()
    with pytest.raises(ValueError, match="not both"):
        with_fallback(print, default=1, degrade=str)
