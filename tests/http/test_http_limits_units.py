"""The gateway's limits one at a time: the pure rules (sizes, caps, what a grpc refusal
becomes), the connection guard on a real uvicorn over loopback, the ASGI guard, the JSON worker
and the log routing. Quick enough to run per mutant (``make mutation``)."""

from __future__ import annotations

import asyncio
import concurrent.futures.process
import contextlib
import json
import logging
import multiprocessing
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import uvicorn
from structlog.testing import capture_logs

from octollm_grpc import codes, errors
from server import json_worker
from server.gen.octollm.tasks.v1 import tasks_pb2
from server.http_limits import (
    ACCEPT_BURST,
    DEFAULT_MAX_BODY,
    GatewayGuard,
    HeaderTooLargeError,
    HttpLimits,
    JsonDecoder,
    JsonLogHandler,
    PayloadTooLargeError,
    Refusals,
    RequestTimeoutError,
    accept_burst,
    check_authorization,
    default_max_connections,
    gateway_config,
    refusal_for,
    register_errors,
    route_uvicorn_logs,
)

# -- the pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(("nofile", "cap"), [
    (100, 16), (256 + 33 * 2, 33), (1000, 372), (1001, 372), (256 + 4096 * 2, 4096),
    (1 << 20, 4096),
])
def test_connection_cap_is_half_what_the_reserve_leaves_within_16_to_4096(
    nofile: int, cap: int,
) -> None:
    assert default_max_connections(nofile) == cap


def test_connection_cap_defaults_to_this_process_s_descriptor_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1000, hard))
    try:
        assert default_max_connections() == 372
        assert HttpLimits().connections() == 372
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_limits_defaults_and_derived_values() -> None:
    limits = HttpLimits()
    assert (limits.max_body, limits.header_timeout, limits.body_timeout, limits.max_header,
            limits.keep_alive) == (DEFAULT_MAX_BODY, 10.0, 30.0, 8192, 5.0)
    assert DEFAULT_MAX_BODY == 1048576
    assert limits.max_head() == 16384
    assert HttpLimits(max_header=10000).max_head() == 20000
    assert HttpLimits(max_header=20).max_head() == 16 * 1024  # h11's own buffer at least
    assert HttpLimits(max_connections=7).connections() == 7


def test_the_gateway_errors_have_their_rows_and_words() -> None:
    register_errors()
    register_errors()  # idempotent
    rows = {cls: codes.mapping_for(error) for cls, error in [
        (PayloadTooLargeError, PayloadTooLargeError(10)),
        (HeaderTooLargeError, HeaderTooLargeError("authorization", 20)),
        (RequestTimeoutError, RequestTimeoutError(1.5)),
    ]}
    assert {cls.__name__: (row.error_code, row.grpc_code, row.http_status, row.client_error)
            for cls, row in rows.items()} == {
        "PayloadTooLargeError": ("PAYLOAD_TOO_LARGE", grpc.StatusCode.INVALID_ARGUMENT, 413,
                                 True),
        "HeaderTooLargeError": ("HEADER_TOO_LARGE", grpc.StatusCode.INVALID_ARGUMENT, 431,
                                True),
        "RequestTimeoutError": ("REQUEST_TIMEOUT", grpc.StatusCode.DEADLINE_EXCEEDED, 408,
                                True),
    }
    assert RequestTimeoutError(1.5).to_dict() == {
        "error": "REQUEST_TIMEOUT", "message": "The request body was not received within 1.5s",
        "details": {"timeout_seconds": 1.5}}


def test_raising_one_registers_the_rows() -> None:
    """Made (raised) before any gateway exists, the error still finds its row."""
    error = HeaderTooLargeError("authorization", 20)
    assert codes.mapping_for(error).http_status == 431


@pytest.mark.parametrize(("error_code", "status", "details"), [
    ("METADATA_TOO_LARGE", 431, {"header": "request", "limit_bytes": 50}),
    ("MESSAGE_TOO_LARGE", 413, {"limit_bytes": 1000}),
])
def test_grpc_s_own_size_refusals_are_said_in_our_words(
    error_code: str, status: int, details: dict[str, Any],
) -> None:
    limits = HttpLimits(max_header=50, max_body=1000)
    refusal = refusal_for(errors.ResourceExhaustedError("grpc's text", error_code=error_code),
                          limits)
    assert codes.mapping_for(refusal).http_status == status
    assert refusal.details == details


def test_a_message_refusal_names_the_smaller_of_the_two_limits() -> None:
    big = HttpLimits(max_body=8 << 20)
    refusal = refusal_for(errors.ResourceExhaustedError("x", error_code="MESSAGE_TOO_LARGE"),
                          big)
    assert refusal.details == {"limit_bytes": 4 * 1024 * 1024}


def test_other_refusals_pass_unchanged() -> None:
    limits = HttpLimits()
    quota = errors.ResourceExhaustedError("quota of metadata writes used up",
                                          error_code="QUOTA")
    assert refusal_for(quota, limits) is quota  # a reason of the service's own: not grpc's
    plain = errors.ResourceExhaustedError("Received message larger than max (5 vs. 4)")
    assert refusal_for(plain, limits) is plain  # only the decoder's verdict counts, not text
    rate = errors.RateLimitError(limit=1, window=60, retry_after=1)
    assert refusal_for(rate, limits) is rate
    cancelled = refusal_for(errors.CancelledCallError("Cancelled"), limits)
    assert cancelled.to_dict() == {"error": "CAPACITY_EXCEEDED",
                                   "message": "The service is overloaded; retry later",
                                   "details": {}, "retry_after": 1.0}


def test_authorization_is_checked_for_size_and_bytes() -> None:
    limits = HttpLimits(max_header=10)
    check_authorization(None, limits)
    check_authorization("Bearer abc", limits)  # exactly 10
    with pytest.raises(HeaderTooLargeError) as large:
        check_authorization("Bearer abcd", limits)
    assert large.value.message == "The authorization header is larger than the limit of 10 bytes"
    for value in ("Bearer é", "Bearer\tx"):
        with pytest.raises(errors.AuthenticationError,
                           match=r"^Malformed authorization header: expected Bearer$"):
            check_authorization(value, limits)


def test_accept_burst_fits_four_bursts_beside_the_cap() -> None:
    """Four accept passes in flight, the kept connections and ~32 own descriptors fit the
    limit (at 128 under 384 descriptors a half-open flood hit EMFILE); 128 at most, 8 at least."""
    assert ACCEPT_BURST == 128
    for nofile in (64, 384, 1024, 4096, 1 << 20):
        cap = default_max_connections(nofile)
        burst = accept_burst(cap, nofile)
        assert 8 <= burst <= 128
        if nofile >= 384:
            assert cap + 4 * burst + 32 <= nofile, nofile
    assert accept_burst(64, 384) == 72
    assert accept_burst(384, 1024) == 128
    assert accept_burst(16, 64) == 8  # the floor: (64 - 16 - 32) // 4 is 4
    assert accept_burst(64, 384 + 3) == 72  # whole connections: (387 - 96) // 4
    assert accept_burst(HttpLimits(max_connections=10).connections(), 384) == 85


def test_gateway_config_takes_the_limits() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not served")

    config = gateway_config(app, HttpLimits(keep_alive=2.6, max_header=10000), Refusals(),
                            grace=-1.0)
    assert (config.backlog, config.timeout_keep_alive, config.timeout_graceful_shutdown,
            config.h11_max_incomplete_event_size) == (
                accept_burst(HttpLimits().connections()), 3, 0.0, 20000)
    assert (config.lifespan, config.access_log, config.log_config) == ("off", False, None)
    assert ACCEPT_BURST == 128
    short = gateway_config(app, HttpLimits(keep_alive=0.2), Refusals(), grace=2.5)
    assert (short.timeout_keep_alive, short.timeout_graceful_shutdown) == (1, 2.5)
    tls = gateway_config(app, HttpLimits(), Refusals(), 1.0, {"ssl_certfile": "c.pem"})
    assert tls.ssl_certfile == "c.pem"


# -- refusals, logged once per interval ---------------------------------------------------------


def test_refusals_are_counted_and_logged_once_per_interval() -> None:
    """The first refusal schedules one event; those before it fires join it, and a refusal
    after it schedules the next: a sustained flood writes one line per interval."""
    timers: list[tuple[float, Callable[[], None]]] = []
    refusals = Refusals(interval=0.05, call_later=lambda delay, fire: timers.append((delay, fire)))
    with capture_logs() as logs:
        refusals.add("max_connections")
        refusals.add("max_connections")
        refusals.add("header_timeout")
        assert logs == [] and [delay for delay, _ in timers] == [0.05]
        timers.pop()[1]()
        refusals.add("header_timeout")  # after the event, the next refusal schedules one again
        refusals.add("max_connections")
        assert len(logs) == 1 and len(timers) == 1
        timers.pop()[1]()
        refusals.flush()  # nothing pending: no event
    assert logs == [
        {"event": "http.connections.refused", "log_level": "warning", "count": 3,
         "reasons": {"max_connections": 2, "header_timeout": 1}, "interval": 0.05},
        {"event": "http.connections.refused", "log_level": "warning", "count": 2,
         "reasons": {"header_timeout": 1, "max_connections": 1}, "interval": 0.05},
    ]
    assert refusals.total == {"max_connections": 3, "header_timeout": 2}
    assert Refusals().interval == 1.0


async def test_refusals_schedule_on_the_running_loop_by_default() -> None:
    refusals = Refusals(interval=0.01)
    with capture_logs() as logs:
        refusals.add("max_connections")
        for _ in range(500):  # bounded: the timer fires after 0.01 s of loop time
            if logs:
                break
            await asyncio.sleep(0.01)
    assert [event["count"] for event in logs] == [1]


# -- the connection guard, on a real uvicorn ----------------------------------------------------


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    """A tiny ASGI app: reads the whole body, answers 200 with its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def guarded(limits: HttpLimits) -> AsyncIterator[tuple[int, Refusals]]:
    """uvicorn with ``gateway_config`` (the guarded protocol) on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    refusals = Refusals(interval=60.0)
    server = uvicorn.Server(gateway_config(GatewayGuard(_echo), limits, refusals, 0.5))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1], refusals
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout=10)


def _envelope(answer: bytes) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(answer.partition(b"\r\n\r\n")[2])
    return document


async def test_a_connection_over_the_cap_gets_503_at_once_and_is_closed() -> None:
    async with guarded(HttpLimits(max_connections=1)) as (port, refusals):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        first = await reader.readuntil(b"\r\n\r\n")  # served: the connection is open
        assert first.startswith(b"HTTP/1.1 200")
        over_reader, over_writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await _read_all(over_reader)
        over_writer.close()
        writer.close()
    head = answer.partition(b"\r\n\r\n")[0].split(b"\r\n")
    body = answer.partition(b"\r\n\r\n")[2]
    assert head == [b"HTTP/1.1 503 Service Unavailable", b"content-type: application/json",
                    b"content-length: %d" % len(body), b"connection: close",
                    b"retry-after: 1"]
    assert json.loads(body) == {
        "error": "CAPACITY_EXCEEDED",
        "message": "The HTTP gateway is at its connection limit; retry later",
        "details": {"max_connections": 1}, "retry_after": 1.0}
    assert refusals.total == {"max_connections": 1}


async def test_a_head_not_sent_in_time_closes_the_connection_without_an_answer() -> None:
    async with guarded(HttpLimits(header_timeout=0.2)) as (port, refusals):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
        assert await _read_all(reader) == b""
        writer.close()
    assert refusals.total == {"header_timeout": 1}


async def test_the_head_timer_restarts_after_each_response_and_spares_a_body_in_progress(
) -> None:
    """An idle keep-alive connection is closed by the head timeout (not after keep_alive's
    5 s); a request whose body is still arriving is left to the body's own timeout."""
    limits = HttpLimits(header_timeout=0.2, keep_alive=30.0)
    async with guarded(limits) as (port, refusals):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nab")
        await writer.drain()
        await asyncio.sleep(0.5)  # past the head timeout, mid-body: still open
        writer.write(b"cd")
        answer = await reader.readuntil(b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(1) == b"4"
        assert await _read_all(reader) == b""  # then closed by the restarted head timer
        writer.close()
    assert refusals.total == {"header_timeout": 1}


@pytest.mark.parametrize(("request_bytes", "status", "error", "reason"), [
    (b"NOT HTTP AT ALL\r\n\r\n", b"400 Bad Request",
     {"error": "INVALID_INPUT", "message": "The request is not valid HTTP/1.1", "details": {}},
     "invalid_http"),
    (b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 17000,  # the head never ends
     b"431 Request Header Fields Too Large",
     {"error": "HEADER_TOO_LARGE",
      "message": "The request head header is larger than the limit of 16384 bytes",
      "details": {"header": "request head", "limit_bytes": 16384}},
     "head_too_large"),
])
async def test_requests_h11_refuses_get_the_envelope_and_are_counted(
    request_bytes: bytes, status: bytes, error: dict[str, Any], reason: str,
) -> None:
    async with guarded(HttpLimits()) as (port, refusals):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        answer = await _read_all(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n")
    assert b"\r\nconnection: close\r\n" in answer
    assert b"retry-after" not in answer
    assert _envelope(answer) == error
    assert refusals.total == {reason: 1}


# -- the ASGI guard ----------------------------------------------------------------------------


async def test_the_guard_passes_other_scopes_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        seen.append((await receive())["type"])
        await send({"type": "lifespan.startup.complete"})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await GatewayGuard(app)({"type": "lifespan"}, _no_body, send)
    assert seen == ["lifespan", "http.request"]
    assert sent == [{"type": "lifespan.startup.complete"}]


async def _no_body() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


@pytest.mark.parametrize(("status", "closes"), [(408, True), (413, True), (400, False),
                                                (200, False)])
async def test_the_guard_closes_the_connection_of_408_and_413_only(status: int,
                                                                   closes: bool) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await GatewayGuard(app)({"type": "http", "path": "/"}, _no_body, send)
    expected = [(b"x-a", b"1"), (b"connection", b"close")] if closes else [(b"x-a", b"1")]
    assert sent[0] == {"type": "http.response.start", "status": status, "headers": expected}
    assert sent[1] == {"type": "http.response.body", "body": b""}


async def test_the_guard_closes_a_response_that_names_no_headers() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 413})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await GatewayGuard(app)({"type": "http", "path": "/"}, _no_body, send)
    assert sent == [{"type": "http.response.start", "status": 413,
                     "headers": [(b"connection", b"close")]}]


async def test_a_cancelled_request_is_answered_503_only_while_stopping() -> None:
    started_first = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if started_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise asyncio.CancelledError

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    guard = GatewayGuard(app)
    assert guard.stopping is False
    with pytest.raises(asyncio.CancelledError):  # not stopping: the cancellation goes on
        await guard({"type": "http", "path": "/x"}, _no_body, send)
    assert sent == []
    guard.stopping = True
    with capture_logs() as logs:
        await guard({"type": "http", "path": "/x"}, _no_body, send)
        await guard({"type": "http"}, _no_body, send)
    assert sent[0] == {"type": "http.response.start", "status": 503,
                       "headers": [(b"content-type", b"application/json"),
                                   (b"retry-after", b"1"), (b"connection", b"close")]}
    assert sent[1]["type"] == "http.response.body"
    assert json.loads(sent[1]["body"]) == {
        "error": "CAPACITY_EXCEEDED",
        "message": "The server is shutting down; retry on another replica",
        "details": {}, "retry_after": 1.0}
    assert [event["path"] for event in logs] == ["/x", ""]
    sent.clear()
    started_first = True  # a response already begun cannot be replaced: nothing more is sent
    await guard({"type": "http", "path": "/x"}, _no_body, send)
    assert sent == [{"type": "http.response.start", "status": 200, "headers": []}]


async def test_a_failing_send_while_answering_a_cut_is_swallowed() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError

    async def send(message: Any) -> None:
        raise OSError("connection gone")

    guard = GatewayGuard(app)
    guard.stopping = True
    await guard({"type": "http", "path": "/x"}, _no_body, send)


# -- the JSON worker -----------------------------------------------------------------------------


async def test_the_worker_decodes_and_names_what_is_wrong() -> None:
    from fastapi.exceptions import RequestValidationError

    decoder = JsonDecoder()
    try:
        message = await decoder.decode(b'{"description": "d", "priority": 2}',
                                       tasks_pb2.CreateTaskRequest())
        assert message == tasks_pb2.CreateTaskRequest(description="d", priority=2)
        with pytest.raises(errors.InvalidInputError) as field:
            await decoder.decode(b'{"priority": "x"}', tasks_pb2.CreateTaskRequest())
        assert field.value.details == {"message_type": "octollm.tasks.v1.CreateTaskRequest",
                                       "field": "priority"}
        with pytest.raises(errors.InvalidInputError) as bad:
            await decoder.decode(b"\xff", tasks_pb2.CreateTaskRequest())
        assert bad.value.message == "The request body is not valid JSON"
        with pytest.raises(RequestValidationError):
            await decoder.decode(b"", tasks_pb2.CreateTaskRequest())
        decoder.close()
        again = await decoder.decode(b"{}", tasks_pb2.GetTaskRequest())  # a new worker
        assert again == tasks_pb2.GetTaskRequest()
        for worker in multiprocessing.active_children():  # the worker dies (OOM killer, say)
            worker.kill()
            worker.join(10)
        with pytest.raises(concurrent.futures.process.BrokenProcessPool):
            await decoder.decode(b"{}", tasks_pb2.GetTaskRequest())
        restarted = await decoder.decode(b'{"task_id": "t"}', tasks_pb2.GetTaskRequest())
        assert restarted == tasks_pb2.GetTaskRequest(task_id="t")
        # One worker however many bodies wait: a flood of costly bodies takes one core.
        await asyncio.gather(*[decoder.decode(b"{}", tasks_pb2.GetTaskRequest())
                               for _ in range(6)])
        assert len(multiprocessing.active_children()) == 1
    finally:
        decoder.close()
    decoder.close()  # twice: nothing to stop


def test_the_worker_watches_its_parent_and_leaves_once_it_is_gone() -> None:
    parents = iter([41, 41, 41, 1])  # the gateway (41), then init after adoption
    slept: list[float] = []
    left: list[int] = []
    json_worker.exit_with_parent(41, interval=0.25, sleep=slept.append,
                                 parent_of=lambda: next(parents), leave=left.append).join(10)
    assert (slept, left) == ([0.25, 0.25, 0.25], [0])


# A gateway's process that dies without closing its decoder (SIGKILL): the worker must not
# outlive it. The child prints its worker's pid, then kills itself.
_KILLED_GATEWAY = """
import asyncio, multiprocessing, os, signal
from server.http_limits import JsonDecoder
from server.gen.octollm.tasks.v1 import tasks_pb2

async def main():
    decoder = JsonDecoder()
    await decoder.decode(b"{}", tasks_pb2.GetTaskRequest())
    print(*[worker.pid for worker in multiprocessing.active_children()], flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _running(pid: int) -> bool:
    """``pid`` exists and is not a zombie (an orphan's end may wait for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_worker_ends_when_the_gateway_s_process_is_killed(tmp_path: Path) -> None:
    # Output to files, not pipes: a worker that outlives the child keeps a pipe open.
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        child = subprocess.run([sys.executable, "-c", _KILLED_GATEWAY], stdout=stdout,
                               stderr=stderr, timeout=60, cwd=Path(__file__).parents[2])
    assert child.returncode == -signal.SIGKILL, err.read_text()
    workers = [int(pid) for pid in out.read_text().split()]
    assert len(workers) == 1
    for _ in range(200):  # bounded: the worker checks its parent every 0.5 s
        if not _running(workers[0]):
            break
        time.sleep(0.05)
    assert not _running(workers[0])


# -- uvicorn's log lines ------------------------------------------------------------------------


def test_uvicorn_records_become_one_structured_event_each() -> None:
    handler = JsonLogHandler()
    with capture_logs() as logs:
        handler.emit(logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1,
                                       "Exception in %s", ("ASGI",), None))
        try:
            raise KeyError("secret")
        except KeyError:
            import sys

            handler.emit(logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1,
                                           "failed", (), sys.exc_info()))
        handler.emit(logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1,
                                       "Invalid HTTP request received.", (), None))
        # A record that cannot be formatted is dropped: logging never fails the server.
        handler.emit(logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1,
                                       "%d connections", ("many",), None))
    assert logs == [
        {"event": "http.server", "log_level": "error", "message": "Exception in ASGI"},
        {"event": "http.server", "log_level": "warning", "message": "failed",
         "exc_type": "KeyError"},
    ]


def test_uvicorn_loggers_are_routed_once_and_do_not_propagate() -> None:
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error")]
    saved = [(logger.handlers[:], logger.propagate) for logger in loggers]
    try:
        route_uvicorn_logs()
        route_uvicorn_logs()
        for logger in loggers:
            assert [type(h) for h in logger.handlers].count(JsonLogHandler) == 1
            assert logger.propagate is False
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved, strict=True):
            logger.handlers[:] = handlers
            logger.propagate = propagate
