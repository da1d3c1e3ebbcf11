"""Sync unary calls tell ``.future()`` from blocking calls through grpc's public API only."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest

from octollm_grpc import errors
from octollm_grpc.client import resilient_interceptors
from octollm_grpc.testing import FakeClock
from tests.client.backend import FAIL, SUCCEED, UNARY, Backend
from tests.servers import sync_server


class _SettleFirst(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sits below the resilient layer and lets each attempt finish before handing it up.

    So the resilient layer always sees a finished attempt, on ``.future()`` too: the case a
    fast failure makes likely in production, made certain here.
    """

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any,
                              request: Any) -> Any:
        outcome = continuation(client_call_details, request)
        outcome.exception()  # waits for the end; never raises the error
        return outcome


def _channel(target: str, clock: FakeClock, sleep: Any) -> grpc.Channel:
    raw = grpc.insecure_channel(target, [("grpc.enable_retries", 0)])
    resilient = resilient_interceptors(target, budget=None, breaker=None, clock=clock.now,
                                       sleep=sleep)
    return grpc.intercept_channel(raw, *resilient, _SettleFirst())


def test_future_with_a_finished_failed_attempt_retries_in_the_background(
        clock: FakeClock) -> None:
    """.future() returns before any backoff; the waits run off the caller's thread."""
    gate = threading.Event()
    sleepers: list[threading.Thread] = []

    def gated_sleep(seconds: float) -> None:
        sleepers.append(threading.current_thread())
        assert gate.wait(10)

    backend = Backend([FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        future = _channel(target, clock, gated_sleep).unary_unary(UNARY).future(b"x")
        assert not future.done()  # the first attempt failed, the retry waits on the gate
        gate.set()
        assert future.result(10) == b"ok"
    assert backend.headers() == [None, "1", "2"]
    assert len(sleepers) == 2
    assert threading.current_thread() not in sleepers


@pytest.mark.parametrize("style", ["call", "with_call"])
def test_blocking_call_retries_in_the_callers_thread(clock: FakeClock, style: str) -> None:
    """__call__ and with_call retry in place (no hand-off to the scheduler thread)."""
    sleepers: list[threading.Thread] = []

    def sleep(seconds: float) -> None:
        sleepers.append(threading.current_thread())

    backend = Backend([FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        method = _channel(target, clock, sleep).unary_unary(UNARY)
        if style == "call":
            assert method(b"x") == b"ok"
        else:
            response, call = method.with_call(b"x")
            assert response == b"ok" and call.code() is grpc.StatusCode.OK
    assert backend.headers() == [None, "1", "2"]
    assert sleepers == [threading.current_thread()] * 2


def test_blocking_call_raises_the_typed_error_after_its_retries(clock: FakeClock) -> None:
    """A blocking call that keeps failing raises the typed error, also a grpc.RpcError."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        method = _channel(target, clock, clock.sleep).unary_unary(UNARY)
        with pytest.raises(errors.NetworkError) as caught:
            method(b"x")
    assert isinstance(caught.value, grpc.RpcError)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert backend.count() == 3
