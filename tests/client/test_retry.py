"""Retry on real channels, sync and aio: attempts, backoff, pushback, deadlines, streams."""

from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.client import RetryPolicy
from octollm_grpc.status import to_status
from octollm_grpc.status._limits import DETAILS_KEY, PUSHBACK_KEY
from octollm_grpc.testing import FakeClock
from tests.client.backend import (
    BIDI,
    CLIENT_STREAM,
    FAIL,
    SERVER_STREAM,
    SUCCEED,
    UNARY,
    UNAVAILABLE,
    Backend,
    Reply,
)
from tests.client.channels import aio_channel, sync_channel
from tests.servers import sync_server

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def _pushback(value: str, code: grpc.StatusCode = UNAVAILABLE) -> Reply:
    return Reply(code, trailers=((PUSHBACK_KEY, value),), messages=0)


def _retry_info(seconds: float) -> Reply:
    """RESOURCE_EXHAUSTED with RetryInfo in the rich status, and no pushback header."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    info = error_details_pb2.RetryInfo(retry_delay=delay)
    status = status_pb2.Status(code=EXHAUSTED.value[0], message="slow down")
    status.details.add().Pack(info)
    return Reply(EXHAUSTED, trailers=((DETAILS_KEY, status.SerializeToString()),),
                 message="slow down", messages=0)


def _rate_limited() -> Reply:
    status = to_status(errors.RateLimitError(limit=100, window=60, retry_after=30))
    return Reply(status.code, trailers=status.trailing_metadata, message=status.details,
                 messages=0)


def _expected_jitter(seed: int, policy: RetryPolicy, retries: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0, policy.backoff_ceiling(n)) for n in range(1, retries + 1)]


# -- attempts, backoff and the attempt header ----------------------------------------------

POLICY4 = RetryPolicy(max_attempts=4, initial_backoff=0.1, max_backoff=1.0)


def test_sync_backoff_sleeps_are_seeded_full_jitter(clock: FakeClock) -> None:
    """Sync: the waits between attempts are the seeded full-jitter draws, in order."""
    backend = Backend([FAIL, FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, retry=POLICY4, rng=random.Random(7))
        assert channel.unary_unary(UNARY)(b"x") == b"ok"
    assert backend.count() == 4
    assert clock.sleeps == _expected_jitter(7, POLICY4, 3)


async def test_aio_backoff_sleeps_are_seeded_full_jitter(clock: FakeClock) -> None:
    """Aio: the waits between attempts are the seeded full-jitter draws, in order."""
    backend = Backend([FAIL, FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, retry=POLICY4, rng=random.Random(7)) as channel:
            assert await channel.unary_unary(UNARY)(b"x") == b"ok"
    assert backend.count() == 4
    assert clock.sleeps == _expected_jitter(7, POLICY4, 3)


def test_sync_stops_at_max_attempts_with_typed_error(clock: FakeClock) -> None:
    """Sync: an always-UNAVAILABLE server sees max_attempts attempts; the caller a typed error."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, retry=RetryPolicy(max_attempts=3))
        with pytest.raises(errors.NetworkError) as caught:
            channel.unary_unary(UNARY)(b"x")
    assert backend.count() == 3
    assert isinstance(caught.value, grpc.RpcError)
    assert caught.value.code() is UNAVAILABLE
    assert caught.value.details() == "scripted failure"


async def test_aio_stops_at_max_attempts_with_typed_error(clock: FakeClock) -> None:
    """Aio: an always-UNAVAILABLE server sees max_attempts attempts; the caller a typed error."""
    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, retry=RetryPolicy(max_attempts=3)) as channel:
            call = channel.unary_unary(UNARY)(b"x")
            with pytest.raises(errors.NetworkError) as caught:
                await call
            assert await call.code() is UNAVAILABLE  # the call still answers its code
    assert backend.count() == 3
    assert isinstance(caught.value, grpc.RpcError)
    assert caught.value.details() == "scripted failure"


NOT_RETRYABLE = [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL,
                 grpc.StatusCode.DEADLINE_EXCEEDED, EXHAUSTED]


@pytest.mark.parametrize("code", NOT_RETRYABLE)
def test_sync_non_retryable_codes_are_not_retried(clock: FakeClock, code: grpc.StatusCode) -> None:
    """Sync: codes outside retryable_codes (and RESOURCE_EXHAUSTED without pushback) go once."""
    backend = Backend([Reply(code, messages=0)], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock)
        with pytest.raises(errors.OctoLLMError) as caught:
            channel.unary_unary(UNARY)(b"x")
    assert backend.count() == 1
    assert caught.value.code() is code
    assert clock.sleeps == []


@pytest.mark.parametrize("code", NOT_RETRYABLE)
async def test_aio_non_retryable_codes_are_not_retried(clock: FakeClock,
                                                       code: grpc.StatusCode) -> None:
    """Aio: codes outside retryable_codes (and RESOURCE_EXHAUSTED without pushback) go once."""
    backend = Backend([Reply(code, messages=0)], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock) as channel:
            with pytest.raises(errors.OctoLLMError) as caught:
                await channel.unary_unary(UNARY)(b"x")
    assert backend.count() == 1
    assert caught.value.code() is code


def test_sync_attempt_header_absent_then_1_then_2(clock: FakeClock) -> None:
    """Sync: the server sees no grpc-previous-rpc-attempts first, then "1", then "2"."""
    backend = Backend([FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        sync_channel(target, clock).unary_unary(UNARY)(b"x", metadata=(("k", "v"),))
        assert backend.headers() == [None, "1", "2"]
        backend.attempts.clear()
        sync_channel(target, clock).unary_unary(UNARY)(  # a caller's own header is replaced
            b"x", metadata=(("grpc-previous-rpc-attempts", "7"),))
    assert backend.headers() == ["7", "1", "2"]


async def test_aio_attempt_header_absent_then_1_then_2(clock: FakeClock) -> None:
    """Aio: the server sees no grpc-previous-rpc-attempts first, then "1", then "2"."""
    backend = Backend([FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock) as channel:
            await channel.unary_unary(UNARY)(b"x", metadata=(("k", "v"),))
            assert backend.headers() == [None, "1", "2"]
            backend.attempts.clear()
            await channel.unary_unary(UNARY)(  # a caller's own header is replaced
                b"x", metadata=(("grpc-previous-rpc-attempts", "7"),))
    assert backend.headers() == ["7", "1", "2"]


# -- server pushback and RetryInfo ------------------------------------------------------------


def test_sync_pushback_300ms_sets_the_next_wait(clock: FakeClock) -> None:
    """Sync: grpc-retry-pushback-ms 300 makes the next attempt wait exactly 300 ms (and logs)."""
    backend = Backend([_pushback("300"), SUCCEED], clock)
    with sync_server([backend.handler()]) as target, capture_logs() as logs:
        assert sync_channel(target, clock).unary_unary(UNARY)(b"x") == b"ok"
    assert clock.sleeps == [0.3]
    assert [a.time for a in backend.attempts] == [1000.0, 1000.3]
    retries = [e for e in logs if e["event"] == "rpc_retry"]
    assert [(e["attempt"], e["delay"], e["server_pushback"], e["code"]) for e in retries] == [
        (2, 0.3, True, "UNAVAILABLE")]


async def test_aio_pushback_300ms_sets_the_next_wait(clock: FakeClock) -> None:
    """Aio: grpc-retry-pushback-ms 300 makes the next attempt wait exactly 300 ms."""
    backend = Backend([_pushback("300"), SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock) as channel:
            assert await channel.unary_unary(UNARY)(b"x") == b"ok"
    assert clock.sleeps == [0.3]


@pytest.mark.parametrize("value", ["-1", "soon", "1.5"])
def test_sync_negative_or_bad_pushback_stops_retrying(clock: FakeClock, value: str) -> None:
    """Sync: a negative or unparseable pushback means no retry at all."""
    backend = Backend([_pushback(value), SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        with pytest.raises(errors.NetworkError):
            sync_channel(target, clock).unary_unary(UNARY)(b"x")
    assert backend.count() == 1


@pytest.mark.parametrize("value", ["-1", "soon"])
async def test_aio_negative_or_bad_pushback_stops_retrying(clock: FakeClock, value: str) -> None:
    """Aio: a negative or unparseable pushback means no retry at all."""
    backend = Backend([_pushback(value), SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock) as channel:
            with pytest.raises(errors.NetworkError):
                await channel.unary_unary(UNARY)(b"x")
    assert backend.count() == 1


def test_sync_retry_info_is_honoured_for_resource_exhausted(clock: FakeClock) -> None:
    """Sync: RESOURCE_EXHAUSTED with RetryInfo(250 ms) is retried after exactly 250 ms."""
    backend = Backend([_retry_info(0.25), SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        assert sync_channel(target, clock).unary_unary(UNARY)(b"x") == b"ok"
    assert clock.sleeps == [0.25]
    assert backend.count() == 2


async def test_aio_retry_info_is_honoured_for_resource_exhausted(clock: FakeClock) -> None:
    """Aio: RESOURCE_EXHAUSTED with RetryInfo(250 ms) is retried after exactly 250 ms."""
    backend = Backend([_retry_info(0.25), SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock) as channel:
            assert await channel.unary_unary(UNARY)(b"x") == b"ok"
    assert clock.sleeps == [0.25]


def test_sync_rate_limit_reaches_caller_typed(clock: FakeClock) -> None:
    """Sync: a 30 s pushback past a 5 s deadline is not waited; RateLimitError keeps retry_after."""
    backend = Backend([_rate_limited()], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock)
        caught: errors.RateLimitError | None = None
        try:
            channel.unary_unary(UNARY)(b"x", timeout=5)
        except errors.RateLimitError as error:  # what callers write
            caught = error
        with pytest.raises(grpc.RpcError) as rpc:  # existing handlers keep working
            channel.unary_unary(UNARY)(b"x", timeout=5)
    assert caught is not None
    assert caught.retry_after == 30
    assert caught.details["limit"] == 100
    assert caught.details() == "Rate limit exceeded: 100 requests per 60s"
    assert rpc.value.code() is EXHAUSTED
    assert backend.count() == 2
    assert clock.sleeps == []


async def test_aio_rate_limit_reaches_caller_typed(clock: FakeClock) -> None:
    """Aio: a 30 s pushback past a 5 s deadline is not waited; RateLimitError keeps retry_after."""
    backend = Backend([_rate_limited()], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock) as channel:
            with pytest.raises(errors.RateLimitError) as caught:
                await channel.unary_unary(UNARY)(b"x", timeout=5)
            with pytest.raises(grpc.RpcError) as rpc:
                await channel.unary_unary(UNARY)(b"x", timeout=5)
    assert caught.value.retry_after == 30
    assert caught.value.details["window"] == 60
    assert rpc.value.code() is EXHAUSTED
    assert backend.count() == 2
    assert clock.sleeps == []


# -- the caller's deadline covers every attempt ---------------------------------------------

DEADLINE_POLICY = RetryPolicy(max_attempts=50, initial_backoff=0.4, max_backoff=0.4)


def _check_deadline(backend: Backend, clock: FakeClock, start: float) -> None:
    times = [attempt.time for attempt in backend.attempts]
    assert len(times) >= 2
    assert all(start <= t < start + 1.0 for t in times)
    assert clock.now() <= start + 1.0
    assert all(delay <= 0.4 for delay in clock.sleeps)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sync_deadline_covers_all_attempts(clock: FakeClock, seed: int) -> None:
    """Sync: 1 s deadline, always UNAVAILABLE, 400 ms backoff: no attempt after it, ends by it."""
    backend = Backend([FAIL], clock)
    start = clock.now()
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, retry=DEADLINE_POLICY, rng=random.Random(seed))
        # The last attempt gets what is left of the (fake) second as its real timeout: on a
        # slow machine it may run out first, hence DEADLINE_EXCEEDED as well as UNAVAILABLE.
        with pytest.raises((errors.NetworkError, errors.TimeoutError)):
            channel.unary_unary(UNARY)(b"x", timeout=1.0)
    _check_deadline(backend, clock, start)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_aio_deadline_covers_all_attempts(clock: FakeClock, seed: int) -> None:
    """Aio: 1 s deadline, always UNAVAILABLE, 400 ms backoff: no attempt after it, ends by it."""
    backend = Backend([FAIL], clock)
    start = clock.now()
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, retry=DEADLINE_POLICY,
                               rng=random.Random(seed)) as channel:
            with pytest.raises((errors.NetworkError, errors.TimeoutError)):
                await channel.unary_unary(UNARY)(b"x", timeout=1.0)
    _check_deadline(backend, clock, start)


def test_sync_per_attempt_timeout_expiry_is_retried(clock: FakeClock) -> None:
    """Sync: an attempt cut by the per-attempt timeout is retried within the caller's deadline."""
    import threading

    stuck = threading.Event()
    backend = Backend([Reply(wait=stuck), SUCCEED], clock)
    # Generous for a loaded machine: every attempt after the stuck one must answer in time.
    policy = RetryPolicy(max_attempts=5, per_attempt_timeout=0.2)
    with sync_server([backend.handler()]) as target:
        try:
            assert sync_channel(target, clock, retry=policy).unary_unary(UNARY)(
                b"x", timeout=30) == b"ok"
        finally:
            stuck.set()
    assert 2 <= backend.count() <= 5


# -- streams ------------------------------------------------------------------------------------


def test_sync_server_stream_failing_after_a_message_is_not_retried(clock: FakeClock) -> None:
    """Sync: once a response message arrived, a failure is raised (typed), never retried."""
    backend = Backend([Reply(UNAVAILABLE, messages=1), SUCCEED], clock)
    received = []
    with sync_server([backend.handler()]) as target:
        stream = sync_channel(target, clock).unary_stream(SERVER_STREAM)(b"x")
        received.append(next(stream))
        with pytest.raises(errors.NetworkError):
            next(stream)
    assert received == [b"m0"]
    assert backend.count() == 1


def test_sync_server_stream_failing_before_any_message_is_retried(clock: FakeClock) -> None:
    """Sync: a stream that fails before its first message is retried and then delivers all."""
    backend = Backend([FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        stream = sync_channel(target, clock).unary_stream(SERVER_STREAM)(b"x")
        assert list(stream) == [b"m0", b"m1"]
        assert stream.code() is grpc.StatusCode.OK
    assert backend.headers() == [None, "1"]


async def test_aio_server_stream_failing_after_a_message_is_not_retried(clock: FakeClock) -> None:
    """Aio: once a response message arrived, a failure is raised (typed), never retried."""
    backend = Backend([Reply(UNAVAILABLE, messages=1), SUCCEED], clock)
    received = []
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock) as channel:
            call = channel.unary_stream(SERVER_STREAM)(b"x")
            received.append(await call.read())
            with pytest.raises(errors.NetworkError):
                await call.read()
    assert received == [b"m0"]
    assert backend.count() == 1


async def test_aio_server_stream_failing_before_any_message_is_retried(clock: FakeClock) -> None:
    """Aio: a stream that fails before its first message is retried and then delivers all."""
    backend = Backend([FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock) as channel:
            call = channel.unary_stream(SERVER_STREAM)(b"x")
            assert [m async for m in call] == [b"m0", b"m1"]
            assert await call.code() is grpc.StatusCode.OK
            reader = channel.unary_stream(SERVER_STREAM)(b"x")  # the read() style too
            assert await reader.read() == b"m0"
    assert backend.headers() == [None, "1", None]


def test_sync_client_streams_are_retried_only_when_replayable(clock: FakeClock) -> None:
    """Sync: client/bidi streams go once by default; replayable ones resend every request."""
    backend = Backend([FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        with pytest.raises(errors.NetworkError):
            sync_channel(target, clock).stream_unary(CLIENT_STREAM)(iter([b"a", b"b"]))
        assert backend.count() == 1
        backend.attempts.clear()
        replayable = sync_channel(target, clock, retry=RetryPolicy(replayable_requests=True))
        assert replayable.stream_unary(CLIENT_STREAM)(iter([b"a", b"b"])) == b"2"
        assert [a.requests for a in backend.attempts] == [[b"a", b"b"], [b"a", b"b"]]
        backend.attempts.clear()
        with pytest.raises(errors.NetworkError):
            list(sync_channel(target, clock).stream_stream(BIDI)(iter([b"c"])))
        assert backend.count() == 1
        backend.attempts.clear()
        assert list(replayable.stream_stream(BIDI)(iter([b"c", b"d"]))) == [b"c", b"d"]
        assert [a.requests for a in backend.attempts] == [[b"c", b"d"], [b"c", b"d"]]


async def test_aio_client_streams_are_retried_only_when_replayable(clock: FakeClock) -> None:
    """Aio: client/bidi streams go once by default; replayable ones resend every request."""
    backend = Backend([FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock) as plain, aio_channel(
                target, clock, retry=RetryPolicy(replayable_requests=True)) as replayable:
            with pytest.raises(errors.NetworkError):
                await plain.stream_unary(CLIENT_STREAM)(iter([b"a", b"b"]))
            assert backend.count() == 1
            backend.attempts.clear()
            call = replayable.stream_unary(CLIENT_STREAM)()  # the write() style
            await call.write(b"a")
            await call.write(b"b")
            await call.done_writing()
            assert await call == b"2"
            assert [a.requests for a in backend.attempts] == [[b"a", b"b"], [b"a", b"b"]]
            backend.attempts.clear()
            with pytest.raises(errors.NetworkError):
                async for _ in plain.stream_stream(BIDI)(iter([b"c"])):
                    pass
            assert backend.count() == 1
            backend.attempts.clear()
            replies = [m async for m in replayable.stream_stream(BIDI)(iter([b"c", b"d"]))]
            assert replies == [b"c", b"d"]
            assert [a.requests for a in backend.attempts] == [[b"c", b"d"], [b"c", b"d"]]


# -- sync .future() ---------------------------------------------------------------------------


def test_sync_future_returns_at_once_and_retries_in_background(clock: FakeClock) -> None:
    """Sync: .future() does not wait for the backoff; the future resolves after the retries."""
    import threading

    gate = threading.Event()
    waits: list[float] = []

    def gated_sleep(seconds: float) -> None:
        waits.append(seconds)
        assert gate.wait(10)

    backend = Backend([FAIL, FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        channel = sync_channel(target, clock, sleep=gated_sleep)
        done: list[object] = []
        future = channel.unary_unary(UNARY).future(b"x", timeout=30)
        future.add_done_callback(done.append)
        assert not future.done()
        gate.set()
        assert future.result(10) == b"ok"
        assert future.code() is grpc.StatusCode.OK
    assert done == [future]
    assert backend.headers() == [None, "1", "2"]
    assert len(waits) == 2


def test_sync_future_failure_and_cancellation(clock: FakeClock) -> None:
    """Sync: a future resolves to the typed error; cancelling it during a backoff stops retries."""
    import threading

    backend = Backend([FAIL], clock)
    with sync_server([backend.handler()]) as target:
        future = sync_channel(target, clock).unary_unary(UNARY).future(b"x")
        assert isinstance(future.exception(10), errors.NetworkError)
        with pytest.raises(errors.NetworkError):
            future.result()
        assert future.code() is UNAVAILABLE
        assert backend.count() == 3

        backend.attempts.clear()
        gate = threading.Event()
        channel = sync_channel(target, clock, sleep=lambda _s: gate.wait(10))
        future = channel.unary_unary(UNARY).future(b"x")
        for _ in range(1000):  # until the first attempt has failed and the backoff began
            if backend.count() == 1 and not future.done():
                break
            threading.Event().wait(0.005)
        assert future.cancel()
        gate.set()
        assert future.cancelled()
        with pytest.raises(grpc.FutureCancelledError):
            future.result(10)
        threading.Event().wait(0.05)  # the background waiter sees the cancel and stops
    assert backend.count() == 1


async def test_aio_cancellation_during_backoff_is_never_retried(clock: FakeClock) -> None:
    """Aio: a caller cancelling during the backoff ends the call; no further attempt is sent."""
    import asyncio

    sleeping = asyncio.Event()

    async def slow_sleep(_seconds: float) -> None:
        sleeping.set()
        await asyncio.sleep(10)

    backend = Backend([FAIL, SUCCEED], clock)
    with sync_server([backend.handler()]) as target:
        async with aio_channel(target, clock, sleep=slow_sleep) as channel:
            call = channel.unary_unary(UNARY)(b"x")
            await asyncio.wait_for(sleeping.wait(), 10)
            assert call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await call.code() is grpc.StatusCode.CANCELLED
    assert backend.count() == 1


# -- connection-level UNAVAILABLE (gRPC's own retries are off) -------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sync_refused_connection_is_retried_by_our_layer(clock: FakeClock) -> None:
    """Sync: nothing listening: each attempt fails UNAVAILABLE and is retried, up to 3."""
    channel = sync_channel(f"127.0.0.1:{_closed_port()}", clock)
    with pytest.raises(errors.NetworkError) as caught:
        channel.unary_unary(UNARY)(b"x", timeout=30)
    channel.close()
    assert caught.value.code() is UNAVAILABLE
    assert len(clock.sleeps) == 2  # three attempts, two waits


async def test_aio_refused_connection_is_retried_by_our_layer(clock: FakeClock) -> None:
    """Aio: nothing listening: each attempt fails UNAVAILABLE and is retried, up to 3."""
    async with aio_channel(f"127.0.0.1:{_closed_port()}", clock) as channel:
        with pytest.raises(errors.NetworkError) as caught:
            await channel.unary_unary(UNARY)(b"x", timeout=30)
    assert caught.value.code() is UNAVAILABLE
    assert len(clock.sleeps) == 2
