"""resilience.CircuitBreaker's exact contract: listeners, call_sync, breaker_of, checks."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc.resilience import CircuitBreaker, CircuitState
from octollm_grpc.resilience._breaker import breaker_of
from octollm_grpc.testing import FakeClock


def _echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def _boom(error: BaseException) -> None:
    raise error


def _breaker(clock: FakeClock, **kwargs: Any) -> CircuitBreaker:
    kwargs.setdefault("registry", CollectorRegistry())
    return CircuitBreaker(clock=clock.now, **kwargs)


def test_listeners_hear_every_transition_in_order() -> None:
    """listeners= get (breaker core, old, new) on open, half-open probe and close."""
    clock = FakeClock()
    heard: list[tuple[Any, CircuitState, CircuitState]] = []
    breaker = _breaker(clock, failure_threshold=2, timeout=5,
                       listeners=[lambda b, old, new: heard.append((b, old, new))])
    for _ in range(2):
        with pytest.raises(ValueError, match="x"):
            breaker.call_sync(_boom, ValueError("x"))
    assert heard == [(breaker.core, CircuitState.CLOSED, CircuitState.OPEN)]
    clock.advance(5)
    assert breaker.call_sync(_echo, 1) == ((1,), {})
    assert [(old, new) for _, old, new in heard] == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED)]


def test_call_sync_forwards_keywords_and_counts_only_expected_errors() -> None:
    """call_sync passes kwargs; a non-expected error gives no verdict; expected ones count."""
    clock = FakeClock()
    breaker = _breaker(clock, failure_threshold=1, timeout=10,
                       expected_exception=(errors.LLMAPIError, ConnectionError))
    assert breaker.call_sync(_echo, 1, 2, key="v") == ((1, 2), {"key": "v"})
    with pytest.raises(KeyError):
        breaker.call_sync(_boom, KeyError("not ours"))
    assert breaker.state is CircuitState.CLOSED
    with pytest.raises(ConnectionError):
        breaker.call_sync(_boom, ConnectionError("down"))
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(errors.CircuitOpenError) as caught:
        breaker.call_sync(_echo)
    assert caught.value.retry_after == 10
    assert caught.value.details == {"target": breaker.name}


async def test_call_forwards_keywords_and_success_resets_the_count() -> None:
    """await call(func, *a, **kw): kwargs passed; a success in between resets the streak."""
    clock = FakeClock()
    breaker = _breaker(clock, failure_threshold=2, timeout=10)
    with pytest.raises(OSError):
        await breaker.call(_boom, OSError("1"))
    assert await breaker.call(_echo, x=1) == ((), {"x": 1})
    with pytest.raises(OSError):
        await breaker.call(_boom, OSError("2"))
    assert breaker.state is CircuitState.CLOSED


async def test_a_half_open_probe_failing_with_another_error_frees_its_permit() -> None:
    """Half-open, the probe raises a non-expected error: no verdict, the next call probes."""
    clock = FakeClock()
    breaker = _breaker(clock, failure_threshold=1, timeout=10,
                       expected_exception=ConnectionError)
    with pytest.raises(ConnectionError):
        breaker.call_sync(_boom, ConnectionError())
    clock.advance(10)
    with pytest.raises(KeyError):
        breaker.call_sync(_boom, KeyError())
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.call_sync(_echo) == ((), {})
    assert breaker.state is CircuitState.CLOSED


def test_breaker_of_finds_the_guard_of_decorated_functions_only() -> None:
    """breaker_of(f) is the breaker of @breaker functions (sync and async), else None."""
    breaker = _breaker(FakeClock())

    @breaker
    def guarded() -> int:
        return 1

    @breaker
    async def guarded_async() -> int:
        return 2

    assert breaker_of(guarded) is breaker
    assert breaker_of(guarded_async) is breaker
    assert breaker_of(_echo) is None

    def impostor() -> None:
        pass

    impostor.__octollm_circuit_breaker__ = "not a breaker"  # type: ignore[attr-defined]
    assert breaker_of(impostor) is None
    assert guarded() == 1 and guarded.__name__ == "guarded"


def test_constructor_checks_in_the_seeds_names() -> None:
    """Bools, non-numbers and out-of-range values are refused, named by the seed's argument."""
    for bad in (0, -1, True, 1.5, "5"):
        with pytest.raises(ValueError, match=re.escape(f"failure_threshold must be an int >= 1, "
                                                       f"not {bad!r}")):
            CircuitBreaker(failure_threshold=bad)  # type: ignore[arg-type]
    for bad_timeout in (0, -1, True, "60", None):
        with pytest.raises(ValueError, match=re.escape(
                f"timeout must be a number of seconds > 0, not {bad_timeout!r}")):
            CircuitBreaker(timeout=bad_timeout)  # type: ignore[arg-type]
    CircuitBreaker(failure_threshold=1, timeout=0.001, registry=CollectorRegistry())


def test_names_repr_and_attributes() -> None:
    """Unnamed breakers are breaker-<n>, numbered in order; repr shows the settings and state."""
    first = CircuitBreaker(registry=CollectorRegistry())
    second = CircuitBreaker(registry=CollectorRegistry())
    n = int(first.name.removeprefix("breaker-"))
    assert second.name == f"breaker-{n + 1}"
    named = CircuitBreaker(3, 7.5, ValueError, name="llm", registry=CollectorRegistry())
    assert (named.failure_threshold, named.timeout, named.expected_exception) == (3, 7.5,
                                                                                  ValueError)
    assert repr(named) == ("CircuitBreaker(name='llm', failure_threshold=3, timeout=7.5, "
                           "state='closed')")
    assert named.core.target == "llm"
    assert named.core.settings.reset_timeout == 7.5
    assert named.core.settings.max_reset_timeout == 300.0
    assert named.core.settings.half_open_probes == 1


def test_a_long_open_time_and_several_probes_are_kept() -> None:
    """timeout over 300 s stays fixed (max_reset_timeout follows it); half_open_probes passed."""
    clock = FakeClock()
    breaker = _breaker(clock, failure_threshold=1, timeout=900, half_open_probes=2)
    assert breaker.core.settings.max_reset_timeout == 900
    assert breaker.core.settings.half_open_probes == 2
    with pytest.raises(OSError):
        breaker.call_sync(_boom, OSError())
    clock.advance(899)
    assert breaker.state is CircuitState.OPEN
    clock.advance(1)
    first, second = breaker.core.acquire(), breaker.core.acquire()
    with pytest.raises(errors.CircuitOpenError):
        breaker.core.acquire()
    breaker.core.on_success(first)
    breaker.core.on_success(second)
    assert breaker.state is CircuitState.CLOSED


def test_metrics_go_to_the_given_registry_under_the_name() -> None:
    """registry= receives the state gauge labelled with the breaker's name."""
    registry = CollectorRegistry()
    breaker = CircuitBreaker(1, 10, name="named", registry=registry)
    with pytest.raises(OSError):
        breaker.call_sync(_boom, OSError())
    assert registry.get_sample_value("octollm_client_circuit_state",
                                     {"target": "named", "method": ""}) == 2
