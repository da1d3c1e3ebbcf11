"""with_fallback's exact contract: arguments forwarded, log fields, skips and degradation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.resilience import CircuitBreaker, CircuitState, with_fallback
from octollm_grpc.resilience._fallback import _MISSING
from octollm_grpc.testing import FakeClock


class Source:
    """A named callable (sync and async) that records its arguments and fails when told to."""

    def __init__(self, name: str, failure: BaseException | None = None) -> None:
        self.name = name
        self.failure = failure
        self.seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def read(self, *args: Any, **kwargs: Any) -> str:
        self.seen.append((args, kwargs))
        if self.failure is not None:
            raise self.failure
        return f"{self.name}:{args}:{sorted(kwargs.items())}"

    async def read_async(self, *args: Any, **kwargs: Any) -> str:
        await asyncio.sleep(0)
        return self.read(*args, **kwargs)


def _down(name: str) -> errors.DatabaseError:
    return errors.DatabaseError("query", ConnectionError(f"{name} down"))


def test_sync_chain_forwards_positional_and_keyword_arguments() -> None:
    """Every callable tried gets the same args and kwargs; the first success is returned."""
    primary, replica = Source("p", _down("p")), Source("r")
    chain = with_fallback(primary.read, replica.read)
    assert chain(1, "two", key="k", n=3) == "r:(1, 'two'):[('key', 'k'), ('n', 3)]"
    assert primary.seen == replica.seen == [((1, "two"), {"key": "k", "n": 3})]


async def test_async_chain_forwards_positional_and_keyword_arguments() -> None:
    """The async chain forwards args and kwargs too, and awaits a sync member's plain value."""
    primary, replica = Source("p", _down("p")), Source("r")
    chain = with_fallback(primary.read_async, replica.read)
    assert asyncio.iscoroutinefunction(chain)
    assert await chain(7, flag=True) == "r:(7,):[('flag', True)]"
    assert primary.seen == replica.seen == [((7,), {"flag": True})]


@pytest.mark.parametrize("aio", [False, True])
async def test_log_events_carry_every_field(aio: bool) -> None:
    """The fallback warning and the final error name functions, error text, type and count."""
    first, second = Source("a", _down("a")), Source("b", RuntimeError("b broke"))
    funcs = (first.read_async, second.read_async) if aio else (first.read, second.read)
    chain = with_fallback(*funcs)
    with capture_logs() as logs, pytest.raises(RuntimeError, match="b broke"):
        await chain() if aio else chain()
    suffix = "_async" if aio else ""
    assert logs == [
        {"event": "resilience.fallback.trying_next", "log_level": "warning",
         "function": f"Source.read{suffix}", "fallback": f"Source.read{suffix}",
         "error": "Database query failed: a down", "error_type": "DATABASE_ERROR"},
        {"event": "resilience.fallback.exhausted", "log_level": "error",
         "function": f"Source.read{suffix}", "attempts": 2, "error": "b broke",
         "error_type": "RuntimeError", "degraded": False},
    ]


@pytest.mark.parametrize("aio", [False, True])
async def test_a_default_is_returned_with_a_warning(aio: bool) -> None:
    """All failed with default=None given: None is returned (a falsy default counts)."""
    only = Source("x", _down("x"))
    chain = with_fallback(only.read_async if aio else only.read, default=None)
    with capture_logs() as logs:
        assert (await chain() if aio else chain()) is None
    assert [(x["event"], x["log_level"], x["degraded"], x["attempts"]) for x in logs] == [
        ("resilience.fallback.exhausted", "warning", True, 1)]


@pytest.mark.parametrize("aio", [False, True])
async def test_degrade_gets_the_last_error(aio: bool) -> None:
    """degrade(error) is called with the last error and its result returned."""
    first, last = Source("a", _down("a")), Source("b", _down("b"))
    seen: list[BaseException] = []

    def degrade(error: BaseException) -> str:
        seen.append(error)
        return "stale"

    funcs = (first.read_async, last.read_async) if aio else (first.read, last.read)
    chain = with_fallback(*funcs, degrade=degrade)
    with capture_logs() as logs:
        assert (await chain() if aio else chain()) == "stale"
    assert seen == [last.failure]
    assert logs[-1]["log_level"] == "warning" and logs[-1]["degraded"] is True


@pytest.mark.parametrize("aio", [False, True])
async def test_only_on_errors_fall_through(aio: bool) -> None:
    """on=(DatabaseError,): a KeyError propagates at once, the next callable is never called."""
    first, second = Source("a", KeyError("k")), Source("b")
    funcs = (first.read_async, second.read_async) if aio else (first.read, second.read)
    chain = with_fallback(*funcs, on=(errors.DatabaseError,), default="unused")
    with capture_logs() as logs, pytest.raises(KeyError):
        await chain() if aio else chain()
    assert second.seen == [] and logs == []


@pytest.mark.parametrize("aio", [False, True])
async def test_an_open_breaker_is_skipped_and_its_error_is_the_last(aio: bool) -> None:
    """The last callable behind an open breaker: never called, its CircuitOpenError raised."""
    clock = FakeClock()
    breaker = CircuitBreaker(1, 30, name="replica-db", clock=clock.now,
                             registry=CollectorRegistry())
    first, guarded = Source("a", _down("a")), Source("b")
    guarded_func = breaker(guarded.read_async if aio else guarded.read)
    breaker.core.on_failure(breaker.core.acquire())
    clock.advance(10)
    chain = with_fallback(first.read_async if aio else first.read, guarded_func)
    with capture_logs() as logs, pytest.raises(errors.CircuitOpenError) as caught:
        await chain() if aio else chain()
    assert guarded.seen == []
    assert caught.value.retry_after == 20
    assert logs[-1]["error_type"] == "CIRCUIT_OPEN"


@pytest.mark.parametrize("aio", [False, True])
async def test_a_half_open_breaker_is_not_skipped_and_keeps_its_permit(aio: bool) -> None:
    """Past the open time the guarded callable runs (the probe) and its success closes it."""
    clock = FakeClock()
    breaker = CircuitBreaker(1, 30, clock=clock.now, registry=CollectorRegistry())
    guarded = Source("b")
    breaker.core.on_failure(breaker.core.acquire())
    clock.advance(30)
    chain = with_fallback(breaker(guarded.read_async if aio else guarded.read))
    assert (await chain(1) if aio else chain(1)) == "b:(1,):[]"
    assert breaker.state is CircuitState.CLOSED


def test_the_chain_validates_its_arguments() -> None:
    """No callable, or both default and degrade: ValueError naming the mistake."""
    with pytest.raises(ValueError, match=r"^with_fallback\(\) needs at least one callable$"):
        with_fallback()
    with pytest.raises(ValueError, match=r"^pass default or degrade, not both$"):
        with_fallback(Source("a").read, default=1, degrade=lambda e: 2)
    assert repr(_MISSING) == "<no default>"


def test_a_callable_without_qualname_is_named_by_its_type() -> None:
    """A callable object without __qualname__ is logged by its class name."""
    class Fetcher:
        def __call__(self) -> str:
            raise _down("f")

    with capture_logs() as logs, pytest.raises(errors.DatabaseError):
        with_fallback(Fetcher(), Fetcher())()
    assert logs[0]["function"] == logs[0]["fallback"] == "Fetcher"


def test_the_warning_names_the_next_callable() -> None:
    """"resilience.fallback.trying_next" names the failed callable and the one tried next."""
    def primary() -> str:
        raise _down("p")

    def secondary() -> str:
        raise _down("s")

    def tertiary() -> str:
        return "t"

    with capture_logs() as logs:
        assert with_fallback(primary, secondary, tertiary)() == "t"
    assert [(x["function"].rsplit(".", 1)[-1], x["fallback"].rsplit(".", 1)[-1])
            for x in logs] == [("primary", "secondary"), ("secondary", "tertiary")]
