"""FaultInjector on real sync and aio servers, all four RPC shapes: fail, delay, pushback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2

from octollm_grpc import errors
from octollm_grpc.testing import (
    FakeClock,
    FaultInjector,
    assert_rich_error,
    serve,
    serve_aio_in_thread,
)
from octollm_grpc.testing._faults import Injection
from tests.testing.service import BIDI, MISSING, SERVER_STREAM, SHAPES, UNARY, Echo, call

_C = grpc.StatusCode


@dataclass
class Served:
    channel: grpc.Channel
    echo: Echo
    injector: FaultInjector


@contextlib.contextmanager
def _served(stack: str, injector: FaultInjector) -> Iterator[Served]:
    echo = Echo()
    if stack == "aio":
        server = serve_aio_in_thread(echo.handler(aio=True), interceptors=[injector])
    else:
        server = serve(echo.handler(), interceptors=[injector])
    with server as target, grpc.insecure_channel(target) as channel:
        yield Served(channel, echo, injector)


@pytest.fixture(params=["sync", "aio"])
def served(request: pytest.FixtureRequest, fault_injector: FaultInjector) -> Iterator[Served]:
    """A sync or aio server (octollm stack, then the plugin's fault_injector) and a channel."""
    with _served(request.param, fault_injector) as s:
        yield s


def _fails(channel: grpc.Channel, method: str, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, method, **kwargs)  # type: ignore[arg-type]
    return caught.value


def _retry_delay(error: errors.OctoLLMError) -> float | None:
    for detail in error.rich_status.details if error.rich_status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


@pytest.mark.parametrize("method", SHAPES)
def test_fail_next_fails_n_calls_before_the_handler_then_passes(served: Served,
                                                               method: str) -> None:
    """fail_next(2, UNAVAILABLE): two calls fail without running the handler, the third passes."""
    served.injector.fail_next(2, _C.UNAVAILABLE)
    for _ in range(2):
        failed = _fails(served.channel, method)
        assert failed.code() is _C.UNAVAILABLE
        assert failed.details() == "UNAVAILABLE (injected by FaultInjector)"
    assert served.echo.runs == 0
    assert len(call(served.channel, method)) == (2 if method == SERVER_STREAM else 1)
    assert served.echo.runs == 1
    assert [(r.method, r.action, r.code) for r in served.injector.records] == [
        (method, "fail", _C.UNAVAILABLE), (method, "fail", _C.UNAVAILABLE), (method, "pass", None)]
    assert served.injector.pending == 0


def test_fail_with_a_typed_error_sends_the_rich_status_with_the_request_id(
        served: Served) -> None:
    """An OctoLLMError goes out as the stack would send it: details, RetryInfo, request id."""
    served.injector.fail_next(1, errors.RateLimitError(limit=5, window=60, retry_after=2))
    failed = _fails(served.channel, UNARY)
    error = assert_rich_error(failed, _C.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED",
                              limit=5, window=60)
    assert isinstance(error, errors.RateLimitError) and error.retry_after == 2
    trailers = dict(failed.trailing_metadata())
    assert trailers["grpc-retry-pushback-ms"] == "2000"
    assert error.request_id is not None and trailers["x-request-id"] == error.request_id


@pytest.mark.parametrize("method", [UNARY, BIDI])
def test_delay_sleeps_on_the_injected_clock_then_runs_the_handler(
        served: Served, fake_clock: FakeClock, method: str) -> None:
    """delay_next(1, 0.5) with the fake clock: the call succeeds, the clock moved 0.5 s."""
    served.injector.delay_next(1, 0.5)
    start = fake_clock.now()
    assert call(served.channel, method)
    assert fake_clock.sleeps == [0.5] and fake_clock.now() == start + 0.5
    assert served.echo.runs == 1
    assert [(r.action, r.seconds) for r in served.injector.records] == [("delay", 0.5)]


def test_pushback_sets_the_trailer_and_retry_info(served: Served) -> None:
    """pushback_next(1, 0.25): UNAVAILABLE with grpc-retry-pushback-ms 250 and RetryInfo 0.25 s."""
    served.injector.pushback_next(1, 0.25)
    failed = _fails(served.channel, UNARY, timeout=None)
    assert failed.code() is _C.UNAVAILABLE
    assert dict(failed.trailing_metadata())["grpc-retry-pushback-ms"] == "250"
    assert _retry_delay(assert_rich_error(failed, _C.UNAVAILABLE, None)) == 0.25
    assert served.injector.records == [Injection(UNARY, "pushback", None, _C.UNAVAILABLE, 0.25)]


def test_pushback_with_a_typed_error_sets_its_retry_after(served: Served) -> None:
    """A typed error's pushback travels as its retry_after; the planned error is left as is."""
    planned = errors.CapacityExceededError("busy")
    served.injector.pushback_next(2, 1.5, error=planned)
    for _ in range(2):
        error = assert_rich_error(_fails(served.channel, UNARY), _C.UNAVAILABLE,
                                  "CAPACITY_EXCEEDED")
        assert error.retry_after == 1.5 and _retry_delay(error) == 1.5
        assert dict(error.trailing_metadata())["grpc-retry-pushback-ms"] == "1500"
    assert planned.retry_after is None


def test_negative_pushback_says_do_not_retry(served: Served) -> None:
    """A negative pushback sends gRFC A6's "-1" (do not retry) and no RetryInfo."""
    served.injector.pushback_next(1, -1, error=errors.CapacityExceededError("busy"))
    failed = _fails(served.channel, UNARY)
    assert dict(failed.trailing_metadata())["grpc-retry-pushback-ms"] == "-1"
    assert _retry_delay(assert_rich_error(failed, _C.UNAVAILABLE, "CAPACITY_EXCEEDED")) is None


def test_method_filter_leaves_other_methods_alone(served: Served) -> None:
    """A fault planned for Bidi is not taken by a Unary call that comes first."""
    served.injector.fail_next(1, _C.INTERNAL, method=BIDI)
    assert call(served.channel, UNARY) == [b"hi"]
    assert served.injector.pending == 1
    assert _fails(served.channel, BIDI).code() is _C.INTERNAL
    assert served.injector.count(UNARY, "pass") == 1 and served.injector.count(BIDI, "fail") == 1


def test_records_the_time_remaining_the_call_carried(served: Served) -> None:
    """A call with a 30 s timeout is recorded with at most 30 s left; one without, with None."""
    call(served.channel, UNARY, timeout=30)
    call(served.channel, UNARY, timeout=None)
    with_deadline, without = served.injector.records
    assert with_deadline.time_remaining is not None and 20 < with_deadline.time_remaining <= 30.5
    assert without.time_remaining is None


def test_concurrent_calls_take_exactly_the_planned_faults(served: Served) -> None:
    """40 concurrent calls against fail_next(10): exactly 10 fail, 30 reach the handler."""
    served.injector.fail_next(10, _C.UNAVAILABLE)
    with futures.ThreadPoolExecutor(8) as pool:
        outcomes = [f.exception(30) for f in
                    [pool.submit(call, served.channel, UNARY) for _ in range(40)]]
    assert sum(isinstance(o, grpc.RpcError) for o in outcomes) == 10
    assert served.injector.count(action="fail") == 10
    assert served.injector.count(action="pass") == 30 == served.echo.runs


def test_unregistered_methods_pass_through_unrecorded(served: Served) -> None:
    """A method no handler serves stays UNIMPLEMENTED and takes no planned fault."""
    served.injector.fail_next(1, _C.INTERNAL)
    assert _fails(served.channel, MISSING).code() is _C.UNIMPLEMENTED
    assert served.injector.records == [] and served.injector.pending == 1


def test_a_handlers_own_error_still_reaches_the_caller(served: Served) -> None:
    """Calls the injector lets pass keep the handler's typed error, mapped by the stack."""
    assert_rich_error(_fails(served.channel, UNARY, request=b"missing"), _C.NOT_FOUND,
                      "TASK_NOT_FOUND", task_id="task-404")


def test_aio_plain_function_handlers_pass_through_unrecorded(fault_injector: FaultInjector,
                                                             ) -> None:
    """On grpc.aio a plain def handler (run in grpc's thread pool) is left to run untouched."""
    fault_injector.fail_next(1, _C.INTERNAL)
    echo = Echo()
    with serve_aio_in_thread(echo.handler(aio=False), interceptors=[fault_injector]) as target:
        with grpc.insecure_channel(target) as channel:
            assert call(channel, UNARY) == [b"hi"]
    assert fault_injector.records == [] and fault_injector.pending == 1


@pytest.mark.parametrize(("plan", "raised"), [
    (lambda i: i.fail_next(0, _C.INTERNAL), ValueError),
    (lambda i: i.fail_next(True, _C.INTERNAL), ValueError),
    (lambda i: i.fail_next(1, _C.OK), TypeError),
    (lambda i: i.fail_next(1, RuntimeError("x")), TypeError),
    (lambda i: i.delay_next(1, -1), ValueError),
    (lambda i: i.delay_next(1, float("nan")), ValueError),
    (lambda i: i.pushback_next(1, float("inf")), ValueError),
    (lambda i: i.fail_next(1, _C.INTERNAL, method="Unary"), ValueError),
])
def test_plans_that_make_no_sense_are_refused(plan: object, raised: type[Exception]) -> None:
    """A zero count, an OK code, a foreign exception, a negative delay, a bad method: refused."""
    injector = FaultInjector()
    with pytest.raises(raised):
        plan(injector)  # type: ignore[operator]
    assert injector.pending == 0


def test_method_names_are_accepted_without_the_leading_slash() -> None:
    """'kit.Echo/Unary' and '/kit.Echo/Unary' name the same method; clear() forgets all."""
    injector = FaultInjector()
    injector.fail_next(1, _C.INTERNAL, method="kit.Echo/Unary")
    assert injector.take("/kit.Echo/Bidi", None) is None
    fault = injector.take(UNARY, 1.0)
    assert fault is not None and fault.action == "fail"
    assert injector.count("kit.Echo/Unary") == 1
    injector.clear()
    assert injector.records == [] and injector.pending == 0


@pytest.mark.parametrize("method", SHAPES)
def test_delay_longer_than_the_deadline_ends_the_call_with_deadline_exceeded(
        served: Served, fake_clock: FakeClock, method: str) -> None:
    """A delay past the caller's deadline: DEADLINE_EXCEEDED once the deadline is spent (on
    the fake clock), and the handler never runs."""
    served.injector.delay_next(1, 30.0)
    start = fake_clock.now()
    failed = _fails(served.channel, method, timeout=2.0)
    assert failed.code() is _C.DEADLINE_EXCEEDED
    assert served.echo.runs == 0
    # grpc-timeout is rounded up on the wire.
    assert len(fake_clock.sleeps) == 1 and 1.0 < fake_clock.sleeps[0] <= 2.1
    assert fake_clock.now() == start + fake_clock.sleeps[0]
    assert call(served.channel, method, timeout=2.0)  # the next call is not delayed
    assert served.echo.runs == 1


def test_delay_within_the_deadline_still_runs_the_handler(
        served: Served, fake_clock: FakeClock) -> None:
    """A delay shorter than the time left only moves the clock; the call succeeds."""
    served.injector.delay_next(1, 0.5)
    assert call(served.channel, UNARY, timeout=5.0)
    assert fake_clock.sleeps == [0.5] and served.echo.runs == 1
