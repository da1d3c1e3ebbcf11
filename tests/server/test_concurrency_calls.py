"""The adaptive concurrency limit on real servers, sync and aio: shedding, pushback, places."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.server import (
    BearerAuth,
    ConcurrencyLimit,
    ServerMetrics,
    StaticTokens,
    server_interceptors,
)
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server._concurrency import SHED_EVENT
from octollm_grpc.status import from_rpc_error
from octollm_grpc.testing import FakeClock
from tests.servers import aio_server, sync_server

SERVICE = "test.Load"
WORK = f"/{SERVICE}/Work"
SHAPE_PATHS = {"unary": f"/{SERVICE}/Hold", "server_stream": f"/{SERVICE}/HoldStream",
               "client_stream": f"/{SERVICE}/HoldUpload", "bidi_stream": f"/{SERVICE}/HoldBidi"}
_WAIT_S = 5.0  # the longest any bounded wait here lasts


@dataclass
class Load:
    """What the handlers do: ``Work`` advances the limiter's fake clock by ``latency`` (its
    latency as the limiter sees it); the ``Hold*`` shapes wait until released or cancelled."""

    clock: FakeClock | None = None
    latency: float = 0.010
    work_runs: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    def work(self) -> bytes:
        self.work_runs += 1
        if self.clock is not None:
            self.clock.advance(self.latency)
        return b"done"


def _sync_handlers(load: Load) -> list[grpc.GenericRpcHandler]:
    def hold(context: Any) -> None:
        ended = threading.Event()
        add_callback = getattr(context, "add_callback", None)  # grpc.aio's def context: none
        if add_callback is not None:
            add_callback(ended.set)  # the call ended (cancelled, deadline): stop holding
        deadline = time.monotonic() + _WAIT_S
        while not (load.release.is_set() or ended.is_set()) and time.monotonic() < deadline:
            ended.wait(0.005)

    def work(request: bytes, context: Any) -> bytes:
        return load.work()

    def unary(request: bytes, context: Any) -> bytes:
        hold(context)
        return b"done"

    def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
        yield b"first"
        hold(context)
        yield b"done"

    def client_stream(requests: Iterator[bytes], context: Any) -> bytes:
        hold(context)
        return b"done"

    def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        yield b"first"
        hold(context)
        yield b"done"

    return [grpc.method_handlers_generic_handler(SERVICE, {
        "Work": grpc.unary_unary_rpc_method_handler(work),
        "Hold": grpc.unary_unary_rpc_method_handler(unary),
        "HoldStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "HoldUpload": grpc.stream_unary_rpc_method_handler(client_stream),
        "HoldBidi": grpc.stream_stream_rpc_method_handler(bidi),
    })]


def _aio_handlers(load: Load) -> list[grpc.GenericRpcHandler]:
    async def hold() -> None:
        # Cancellation (the client's cancel or deadline) interrupts the sleep.
        deadline = time.monotonic() + _WAIT_S
        while not load.release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def work(request: bytes, context: Any) -> bytes:
        return load.work()

    async def unary(request: bytes, context: Any) -> bytes:
        await hold()
        return b"done"

    async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"first"
        await hold()
        yield b"done"

    async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
        await hold()
        return b"done"

    async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        yield b"first"
        await hold()
        yield b"done"

    return [grpc.method_handlers_generic_handler(SERVICE, {
        "Work": grpc.unary_unary_rpc_method_handler(work),
        "Hold": grpc.unary_unary_rpc_method_handler(unary),
        "HoldStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "HoldUpload": grpc.stream_unary_rpc_method_handler(client_stream),
        "HoldBidi": grpc.stream_stream_rpc_method_handler(bidi),
    })]


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


async def _wait_until_async(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def _refused(registry: CollectorRegistry, method: str = "Work") -> float | None:
    return registry.get_sample_value("octollm_concurrency_refused_total", {
        "grpc_service": SERVICE, "grpc_method": method, "partition": "default"})


def _check_shed(error: grpc.RpcError, load: Load, runs_before: int,
                registry: CollectorRegistry, logs: list[dict[str, Any]]) -> None:
    """The refused call: RESOURCE_EXHAUSTED with RetryInfo and the pushback trailer, refused
    before its handler, counted, logged once in aggregate."""
    decoded = from_rpc_error(error)
    assert isinstance(decoded, e.RateLimitError)
    assert decoded.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert decoded.details == {"limit": 2, "key": "concurrency"}
    # The limiter's view of when capacity frees: its recent latency (~89 ms) / limit (2).
    assert decoded.retry_after is not None and 0.040 < decoded.retry_after < 0.050
    # list() first: grpcio 1.66's dict(grpc.aio.Metadata) raises KeyError.
    trailers = dict(list(error.trailing_metadata() or ()))  # type: ignore[attr-defined]
    assert int(trailers["grpc-retry-pushback-ms"]) == round(decoded.retry_after * 1000)
    assert load.work_runs == runs_before
    assert _refused(registry) == 1.0
    assert registry.get_sample_value("octollm_concurrency_limit") == 2.0
    assert registry.get_sample_value("grpc_server_handled_total", {
        "grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Work",
        "grpc_code": "ResourceExhausted"}) == 1.0
    shed = [entry for entry in logs if entry["event"] == SHED_EVENT]
    assert len(shed) == 1
    assert shed[0]["caller"] == "default" and shed[0]["count"] == 1
    assert shed[0]["grpc_method"] == WORK and shed[0]["grpc_code"] == "RESOURCE_EXHAUSTED"


def _slow_down(limiter: ConcurrencyLimit, load: Load, call: Callable[[], Any]) -> None:
    """10 calls at 10 ms keep the resting limit (4); 20 at 100 ms shrink it to 2."""
    for _ in range(10):
        call()
    assert limiter.limit == 4
    load.latency = 0.100
    for _ in range(20):
        call()
    assert limiter.limit == 2


def test_sync_growing_latency_sheds_with_pushback() -> None:
    """Sync: once latency grows the limit falls to 2; with 2 calls held a third is refused
    with pushback before its handler runs; the places come back when they end."""
    clock = FakeClock()
    load = Load(clock=clock)
    limiter = ConcurrencyLimit(min_limit=1, max_limit=10, initial_limit=4, clock=clock)
    registry = CollectorRegistry()
    stack = server_interceptors(metrics=ServerMetrics(registry), concurrency=limiter)
    with capture_logs() as logs, sync_server(_sync_handlers(load), stack) as target, \
            grpc.insecure_channel(target) as channel:
        work = channel.unary_unary(WORK)
        _slow_down(limiter, load, lambda: work(b"x", timeout=5))
        held = [channel.unary_unary(SHAPE_PATHS["unary"]).future(b"x", timeout=5)
                for _ in range(2)]
        _wait_until(lambda: limiter.in_flight == 2)
        runs = load.work_runs
        with pytest.raises(grpc.RpcError) as refused:
            work(b"x", timeout=5)
        _check_shed(refused.value, load, runs, registry, logs)
        load.release.set()
        assert [f.result() for f in held] == [b"done", b"done"]
        _wait_until(lambda: limiter.in_flight == 0)


async def test_aio_growing_latency_sheds_with_pushback() -> None:
    """aio: the same."""
    clock = FakeClock()
    load = Load(clock=clock)
    limiter = ConcurrencyLimit(min_limit=1, max_limit=10, initial_limit=4, clock=clock)
    registry = CollectorRegistry()
    stack = server_aio.server_interceptors(metrics=ServerMetrics(registry), concurrency=limiter)
    with capture_logs() as logs:
        async with aio_server(_aio_handlers(load), stack) as target, \
                grpc.aio.insecure_channel(target) as channel:
            work = channel.unary_unary(WORK)
            for _ in range(10):
                await work(b"x", timeout=5)
            assert limiter.limit == 4
            load.latency = 0.100
            for _ in range(20):
                await work(b"x", timeout=5)
            assert limiter.limit == 2
            held = [channel.unary_unary(SHAPE_PATHS["unary"])(b"x", timeout=5)
                    for _ in range(2)]
            await _wait_until_async(lambda: limiter.in_flight == 2)
            runs = load.work_runs
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await work(b"x", timeout=5)
            _check_shed(refused.value, load, runs, registry, logs)
            load.release.set()
            assert [await call for call in held] == [b"done", b"done"]
            await _wait_until_async(lambda: limiter.in_flight == 0)


def test_sync_light_load_sheds_nothing() -> None:
    """Sync: 60 calls, up to 2 at once, latency 10-12 ms: no refusal, the limit stays put."""
    clock = FakeClock()
    load = Load(clock=clock)
    limiter = ConcurrencyLimit(min_limit=1, max_limit=10, initial_limit=4, clock=clock)
    registry = CollectorRegistry()
    stack = server_interceptors(metrics=ServerMetrics(registry), concurrency=limiter)
    with sync_server(_sync_handlers(load), stack) as target, \
            grpc.insecure_channel(target) as channel:
        work = channel.unary_unary(WORK)
        for i in range(30):
            load.latency = 0.010 + 0.002 * (i % 2)
            pending = [work.future(b"x", timeout=5) for _ in range(2)]
            assert [f.result() for f in pending] == [b"done", b"done"]
    assert _refused(registry) is None
    assert limiter.limit == 4 and limiter.samples == 60 and limiter.in_flight == 0


async def test_aio_light_load_sheds_nothing() -> None:
    """aio: the same."""
    clock = FakeClock()
    load = Load(clock=clock)
    limiter = ConcurrencyLimit(min_limit=1, max_limit=10, initial_limit=4, clock=clock)
    registry = CollectorRegistry()
    stack = server_aio.server_interceptors(metrics=ServerMetrics(registry), concurrency=limiter)
    async with aio_server(_aio_handlers(load), stack) as target, \
            grpc.aio.insecure_channel(target) as channel:
        work = channel.unary_unary(WORK)
        for i in range(30):
            load.latency = 0.010 + 0.002 * (i % 2)
            assert await asyncio.gather(work(b"x", timeout=5), work(b"x", timeout=5)) == \
                [b"done", b"done"]
    assert _refused(registry) is None
    assert limiter.limit == 4 and limiter.samples == 60 and limiter.in_flight == 0


@contextlib.contextmanager
def _sync_health_server(load: Load, stack: Any) -> Iterator[str]:
    """A sync server with the test handlers and the standard health service."""
    pool = futures.ThreadPoolExecutor(max_workers=8)
    server = grpc.server(pool, interceptors=stack)
    server.add_generic_rpc_handlers(tuple(_sync_handlers(load)))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait(5)
        pool.shutdown(wait=False, cancel_futures=True)


def test_sync_health_checks_and_reflection_are_never_shed() -> None:
    """Sync: with the whole limit (1) held, health checks still answer SERVING and reflection
    lists the services, while a regular call is refused."""
    load = Load()
    limiter = ConcurrencyLimit(min_limit=1, max_limit=1, initial_limit=1)
    registry = CollectorRegistry()
    stack = server_interceptors(metrics=ServerMetrics(registry), concurrency=limiter)
    with _sync_health_server(load, stack) as target, grpc.insecure_channel(target) as channel:
        held = channel.unary_unary(SHAPE_PATHS["unary"]).future(b"x", timeout=5)
        _wait_until(lambda: limiter.in_flight == 1)
        check = health_pb2_grpc.HealthStub(channel).Check
        for _ in range(5):
            reply = check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        info = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        listed = [s.name for r in info for s in r.list_services_response.service]
        assert SERVICE in listed
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(WORK)(b"x", timeout=5)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        load.release.set()
        assert held.result() == b"done"
    assert limiter.in_flight == 0 and _refused(registry) == 1.0


async def test_aio_health_checks_are_never_shed() -> None:
    """aio: the same, with grpc_health's aio servicer."""
    load = Load()
    limiter = ConcurrencyLimit(min_limit=1, max_limit=1, initial_limit=1)
    registry = CollectorRegistry()
    stack = server_aio.server_interceptors(metrics=ServerMetrics(registry), concurrency=limiter)
    server = grpc.aio.server(interceptors=stack)
    server.add_generic_rpc_handlers(tuple(_aio_handlers(load)))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            held = channel.unary_unary(SHAPE_PATHS["unary"])(b"x", timeout=5)
            await _wait_until_async(lambda: limiter.in_flight == 1)
            check = health_pb2_grpc.HealthStub(channel).Check
            for _ in range(5):
                reply = await check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary(WORK)(b"x", timeout=5)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            load.release.set()
            assert await held == b"done"
    finally:
        await server.stop(grace=None)
    assert limiter.in_flight == 0 and _refused(registry) == 1.0


# -- every end of a call gives its place back -----------------------------------------------


def _requests() -> Iterator[bytes]:
    yield b"r0"
    yield b"r1"


async def _requests_async() -> AsyncIterator[bytes]:
    yield b"r0"
    yield b"r1"


@pytest.mark.parametrize("shape", list(SHAPE_PATHS))
def test_sync_cancelled_and_expired_calls_give_their_place_back(shape: str) -> None:
    """Sync, each shape: a call cancelled by its client, and one whose deadline passes, each
    leave the calls in flight at 0 again, with one latency sample each for unary calls (a
    stream's duration is no latency sample)."""
    load = Load()
    limiter = ConcurrencyLimit(min_limit=1, max_limit=10, initial_limit=4)
    stack = server_interceptors(metrics=ServerMetrics(CollectorRegistry()), concurrency=limiter)
    path = SHAPE_PATHS[shape]
    with sync_server(_sync_handlers(load), stack) as target, \
            grpc.insecure_channel(target) as channel:
        for timeout in (5.0, 0.2):
            call: Any
            if shape == "unary":
                call = channel.unary_unary(path).future(b"x", timeout=timeout)
            elif shape == "client_stream":
                call = channel.stream_unary(path).future(_requests(), timeout=timeout)
            elif shape == "server_stream":
                call = channel.unary_stream(path)(b"x", timeout=timeout)
            else:
                call = channel.stream_stream(path)(_requests(), timeout=timeout)
            _wait_until(lambda: limiter.in_flight == 1)
            if timeout == 5.0:
                call.cancel()
            _wait_until(lambda: limiter.in_flight == 0)
            assert call.code() in (grpc.StatusCode.CANCELLED,
                                   grpc.StatusCode.DEADLINE_EXCEEDED)
    assert limiter.samples == (2 if shape == "unary" else 0)
    assert limiter.partition_in_flight() == {"default": 0}


@pytest.mark.parametrize("shape", list(SHAPE_PATHS))
async def test_aio_cancelled_and_expired_calls_give_their_place_back(shape: str) -> None:
    """aio, each shape: the same."""
    load = Load()
    limiter = ConcurrencyLimit(min_limit=1, max_limit=10, initial_limit=4)
    stack = server_aio.server_interceptors(metrics=ServerMetrics(CollectorRegistry()),
                                           concurrency=limiter)
    path = SHAPE_PATHS[shape]
    async with aio_server(_aio_handlers(load), stack) as target, \
            grpc.aio.insecure_channel(target) as channel:
        for timeout in (5.0, 0.2):
            call: Any
            if shape == "unary":
                call = channel.unary_unary(path)(b"x", timeout=timeout)
            elif shape == "client_stream":
                call = channel.stream_unary(path)(_requests_async(), timeout=timeout)
            elif shape == "server_stream":
                call = channel.unary_stream(path)(b"x", timeout=timeout)
            else:
                call = channel.stream_stream(path)(_requests_async(), timeout=timeout)
            await _wait_until_async(lambda: limiter.in_flight == 1)
            if timeout == 5.0:
                call.cancel()
            await _wait_until_async(lambda: limiter.in_flight == 0)
            assert await call.code() in (grpc.StatusCode.CANCELLED,
                                         grpc.StatusCode.DEADLINE_EXCEEDED)
    assert limiter.samples == (2 if shape == "unary" else 0)
    assert limiter.partition_in_flight() == {"default": 0}


async def test_aio_def_handlers_are_limited_too() -> None:
    """aio with plain def handlers (run in grpc.aio's thread pool): a held call fills the
    limit of 1, the next is refused before its handler, and the place comes back."""
    load = Load()
    limiter = ConcurrencyLimit(min_limit=1, max_limit=1, initial_limit=1)
    registry = CollectorRegistry()
    stack = server_aio.server_interceptors(metrics=ServerMetrics(registry), concurrency=limiter)
    pool = futures.ThreadPoolExecutor(max_workers=4)
    try:
        async with aio_server(_sync_handlers(load), stack, migration_pool=pool) as target, \
                grpc.aio.insecure_channel(target) as channel:
            held = channel.unary_unary(SHAPE_PATHS["unary"])(b"x", timeout=5)
            await _wait_until_async(lambda: limiter.in_flight == 1)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary(WORK)(b"x", timeout=5)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert load.work_runs == 0
            load.release.set()
            assert await held == b"done"
            await _wait_until_async(lambda: limiter.in_flight == 0)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    assert limiter.samples == 1 and _refused(registry) == 1.0


@pytest.mark.parametrize("stack_name", ["sync", "aio"])
async def test_a_call_auth_refuses_gives_its_place_back_without_a_sample(
        stack_name: str) -> None:
    """Admitted, then refused by auth: the place is free again and no latency is sampled
    (the handler never ran); an authorised call is sampled once."""
    load = Load()
    limiter = ConcurrencyLimit(min_limit=1, max_limit=4, initial_limit=2)
    auth = BearerAuth(StaticTokens({"secret": ["work"]}), scopes={WORK: ["work"]})
    token = (("authorization", "Bearer secret"),)
    if stack_name == "sync":
        stack = server_interceptors(metrics=False, auth=auth, concurrency=limiter)
        with sync_server(_sync_handlers(load), stack) as target, \
                grpc.insecure_channel(target) as channel:
            with pytest.raises(grpc.RpcError) as denied:
                channel.unary_unary(WORK)(b"x", timeout=5)
            assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
            assert limiter.in_flight == 0 and limiter.samples == 0
            assert channel.unary_unary(WORK)(b"x", timeout=5, metadata=token) == b"done"
    else:
        aio_stack = server_aio.server_interceptors(metrics=False, auth=auth,
                                                   concurrency=limiter)
        async with aio_server(_aio_handlers(load), aio_stack) as target, \
                grpc.aio.insecure_channel(target) as aio_channel:
            with pytest.raises(grpc.aio.AioRpcError) as aio_denied:
                await aio_channel.unary_unary(WORK)(b"x", timeout=5)
            assert aio_denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert limiter.in_flight == 0 and limiter.samples == 0
            assert await aio_channel.unary_unary(WORK)(b"x", timeout=5, metadata=token) == \
                b"done"
    assert limiter.in_flight == 0 and limiter.samples == 1
