"""What one hostile HTTP caller can cost the others, against ``python -m server --http-port 0``.

Each abuse runs against the real service (uvicorn gateway and grpc.aio server in one process,
one event loop), while an innocent caller keeps calling ``GetTask`` over gRPC from this process
on its own channel; its latencies are measured and bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import select
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from server.gateway import create_app, gateway_channel, start_gateway
from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from server.http_limits import HttpLimits
from tests.http.test_gateway import http_url
from tests.service.harness import RunningService, running_service

# The abuse lasts at most this long per test (bounded loops, loopback only).
ABUSE_SECONDS = 2.0


def _port(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host.strip("[]"), int(port)


def _events(service: RunningService, name: str) -> list[dict[str, Any]]:
    found = []
    for line in service.logs().splitlines():
        if f'"event":"{name}"' in line:
            found.append(json.loads(line))
    return found


class Innocent:
    """A gRPC caller minding its own business: GetTask in a loop, each call timed."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = tasks_pb2_grpc.TaskServiceStub(self.channel)  # type: ignore[no-untyped-call]
        created = self.stub.CreateTask(tasks_pb2.CreateTaskRequest(description="innocent"),
                                       timeout=10)
        self.task_id = created.task.task_id
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self, stop: threading.Event, limit: int = 400) -> None:
        """Call until ``stop`` (at most ``limit`` calls), ~100 per second."""
        for _ in range(limit):
            if stop.is_set():
                break
            start = time.perf_counter()
            try:
                self.stub.GetTask(tasks_pb2.GetTaskRequest(task_id=self.task_id), timeout=5)
            except grpc.RpcError as error:
                self.failures.append(str(error.code()))  # type: ignore[attr-defined]
            self.latencies.append(time.perf_counter() - start)
            stop.wait(0.01)

    def percentiles(self) -> tuple[float, float]:
        """(p50, p99) in seconds."""
        ordered = sorted(self.latencies)
        return statistics.median(ordered), ordered[min(len(ordered) - 1,
                                                       int(len(ordered) * 0.99))]

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


@contextlib.contextmanager
def innocent_during(target: str) -> Iterator[Innocent]:
    """An :class:`Innocent` calling in a thread for the duration of the block."""
    innocent = Innocent(target)
    stop = threading.Event()
    thread = threading.Thread(target=innocent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield innocent
    finally:
        stop.set()
        thread.join(10)
        innocent.close()


@contextlib.contextmanager
def lowered_nofile(limit: int) -> Iterator[None]:
    """Children started in the block get ``RLIMIT_NOFILE`` ``limit`` (this process: restored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_slowloris_is_capped_timed_out_logged_once_and_spares_grpc(tmp_path: Path) -> None:
    """400 half-sent requests under a 384-descriptor limit: the gateway keeps at most its cap
    (64), answers the rest 503 at once, closes the kept ones after the header timeout, logs
    the refusals as aggregated events, and a new gRPC caller is served quickly throughout."""
    with contextlib.ExitStack() as stack:
        with lowered_nofile(384):
            service = stack.enter_context(running_service(
                tmp_path, "--http-port", "0", "--rate-limit", "0",
                "--http-header-timeout", "4"))
        host, port = _port(http_url(service))
        sockets: list[socket.socket] = []
        answered: dict[socket.socket, bytes] = {}

        def settle(deadline: float) -> None:
            """Read answers until at most the cap (64) are unanswered (or ``deadline``)."""
            while len(sockets) - len(answered) > 64 and time.monotonic() < deadline:
                waiting = [sock for sock in sockets if sock not in answered]
                ready, _, _ = select.select(waiting, [], [], 0.05)
                for sock in ready:
                    answered[sock] = sock.recv(4096)

        # A new gRPC channel (new descriptors in the service) while all of them are open.
        with innocent_during(service.target) as innocent:
            # In waves the listen backlog (72 here) holds: a flood past it waits for the
            # kernel's SYN-ACK retries (1 s, 3 s), which would time the test, not the gateway.
            # Each connection over the cap is answered at once; the kept ones stay open
            # until the 4 s header timeout, well after the last wave.
            for _ in range(10):
                for _ in range(40):
                    sock = socket.create_connection((host, port), timeout=5)
                    sock.sendall(b"GET /v1/tasks HTTP/1.1\r\nhost: x\r\nx-slow: ")
                    sockets.append(sock)
                settle(time.monotonic() + 2.0)
            refused = kept = 0
            for sock in sockets:
                answer = answered.get(sock, b"")
                if answer:
                    assert answer.startswith(b"HTTP/1.1 503"), answer
                    assert b'"error":"CAPACITY_EXCEEDED"' in answer
                    assert b"retry-after: 1" in answer
                    refused += 1
                else:  # still open, waiting for the header timeout
                    kept += 1
            assert kept <= 64 and refused == 400 - kept, (kept, refused)
            # The kept ones are closed by the header timeout (4 s), not held for ever.
            deadline = time.monotonic() + 8.0
            for sock in sockets:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                with contextlib.suppress(ConnectionError):
                    while sock.recv(4096):
                        pass
            assert time.monotonic() < deadline
        p50, p99 = innocent.percentiles()
        for sock in sockets:
            sock.close()

        assert not innocent.failures, innocent.failures[:3]
        assert len(innocent.latencies) >= 20
        assert p50 < 0.05 and p99 < 0.5, (p50, p99)
        with httpx.Client(base_url=http_url(service), timeout=10) as http:
            assert http.get("/v1/tasks").status_code == 200
        time.sleep(1.0)  # the refusal event is written once a second
        events = _events(service, "http.connections.refused")
        reasons: dict[str, int] = {}
        for event in events:
            for reason, count in event["reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + count
        assert reasons == {"max_connections": refused, "header_timeout": kept}, reasons
        assert len(events) <= 8, len(events)  # aggregated: a line a second, not one each
        logs = service.logs()
        assert "out of system resource" not in logs and "Traceback" not in logs


def _send_until_answered(host: str, port: int, head: bytes, chunk: bytes,
                         total: int) -> tuple[bytes, int]:
    """Send ``head`` then up to ``total`` bytes of ``chunk``s, stopping as soon as the server
    answers; the answer and how many body bytes had been sent."""
    sent = 0
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head)
        while sent < total:
            ready, _, _ = select.select([sock], [], [], 0)
            if ready:
                break
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: read what it said
                break
            sent += len(chunk)
        sock.settimeout(10)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):  # until the server closes (connection: close)
                answer += data
    return answer, sent


def test_large_bodies_are_413_before_read_and_spare_grpc(tmp_path: Path) -> None:
    """18 MB bodies, with and without content-length, in a loop: each is 413 PAYLOAD_TOO_LARGE
    long before the body was sent whole, and an innocent gRPC caller keeps its latency."""
    with running_service(tmp_path, "--http-port", "0", "--rate-limit", "0") as service:
        host, port = _port(http_url(service))
        big = 18 * 1024 * 1024
        piece = b"x" * 65536
        chunk = b"10000\r\n" + piece + b"\r\n"
        with innocent_during(service.target) as innocent:
            end = time.monotonic() + ABUSE_SECONDS
            rounds = 0
            while time.monotonic() < end and rounds < 40:
                rounds += 1
                declared, sent = _send_until_answered(
                    host, port, b"POST /v1/tasks HTTP/1.1\r\nhost: x\r\ncontent-type: "
                    b"application/json\r\ncontent-length: %d\r\n\r\n" % big, piece, big)
                assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
                # Answered long before the body was sent whole (socket buffers hold a few MB).
                assert sent < 8 * 1024 * 1024
                chunked, sent = _send_until_answered(
                    host, port, b"POST /v1/tasks HTTP/1.1\r\nhost: x\r\ncontent-type: "
                    b"application/json\r\ntransfer-encoding: chunked\r\n\r\n", chunk, big)
                assert chunked.startswith(b"HTTP/1.1 413"), chunked[:200]
                assert sent < 8 * 1024 * 1024
        p50, p99 = innocent.percentiles()
        body = json.loads(declared.partition(b"\r\n\r\n")[2])
        assert body == {"error": "PAYLOAD_TOO_LARGE",
                        "message": "The request body is larger than the limit of 1048576 bytes",
                        "details": {"limit_bytes": 1048576}}
        assert b"connection: close" in declared
        assert not innocent.failures, innocent.failures[:3]
        assert p50 < 0.05 and p99 < 0.5, (p50, p99, rounds)


def test_parsing_large_json_does_not_block_grpc(tmp_path: Path) -> None:
    """Bodies just under 1 MiB that are costly to parse, in a loop: decoded off the event
    loop, each a 400 envelope, while an innocent gRPC caller keeps its latency."""
    costly = b'{"description": [' + b",".join([b"[1,2,3]"] * 120_000) + b"]}"
    assert len(costly) < 1024 * 1024
    with running_service(tmp_path, "--http-port", "0", "--rate-limit", "0") as service:
        with innocent_during(service.target) as innocent, \
                httpx.Client(base_url=http_url(service), timeout=30) as http:
            end = time.monotonic() + ABUSE_SECONDS
            statuses = set()
            for _ in range(60):
                if time.monotonic() > end:
                    break
                statuses.add(http.post("/v1/tasks", content=costly).status_code)
        p50, p99 = innocent.percentiles()
        assert statuses == {400}
        assert not innocent.failures, innocent.failures[:3]
        assert p50 < 0.05 and p99 < 0.5, (p50, p99)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with running_service(tmp_path_factory.mktemp("limits"), "--http-port", "0",
                         "--rate-limit", "0", "--http-max-body", str(6 * 1024 * 1024)) as running:
        yield running


@pytest.fixture(scope="module")
def client(service: RunningService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_url(service), timeout=30) as http:
        yield http


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"description": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "deep nesting"),
    (b'{"priority": ' + b"9" * 5000 + b"}", "an integer past Python's digit limit"),
    (b'{"description": "caf\xe9"}', "invalid UTF-8"),
    (b'{"description": "x",', "truncated JSON"),
])
def test_every_body_parse_failure_gets_the_envelope_logged_and_counted(
    client: httpx.Client, service: RunningService, body: bytes, reason: str,
) -> None:
    """Any body JSON cannot decode is 400 INVALID_INPUT in the envelope, logged and counted."""
    assert service.metrics_url is not None
    before = _errors_counted(service.metrics_url, "INVALID_INPUT")
    response = client.post("/v1/tasks", content=body,
                           headers={"x-request-id": f"parse-{len(body)}"})
    assert response.status_code == 400, reason
    assert response.json() == {
        "error": "INVALID_INPUT", "message": "The request body is not valid JSON",
        "details": {"message_type": "octollm.tasks.v1.CreateTaskRequest"}}, reason
    assert _errors_counted(service.metrics_url, "INVALID_INPUT") == before + 1
    assert any(f'"request_id":"parse-{len(body)}"' in line and "http.request.failed" in line
               for line in service.logs().splitlines())


def _errors_counted(metrics_url: str, error_type: str) -> float:
    text = httpx.get(metrics_url).text
    match = re.search(rf'octollm_errors_total\{{component="http",error_type="{error_type}"\}}'
                      r" (\S+)", text)
    return float(match.group(1)) if match else 0.0


def test_out_of_range_page_size_is_400_naming_it(client: httpx.Client) -> None:
    """page_size past int32 is 400 INVALID_INPUT naming the field, as on gRPC; not a 500."""
    for value in ("2147483648", "-2147483649", "99999999999999999999"):
        response = client.get("/v1/tasks", params={"page_size": value})
        assert response.status_code == 400, value
        assert response.json() == {"error": "INVALID_INPUT",
                                   "message": "page_size must be between 1 and 1000",
                                   "details": {"field": "page_size"}}


def _raw_request(url: str, head: bytes) -> bytes:
    host, port = _port(url)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head)
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            received += data
    return received


@pytest.mark.parametrize("value", [b"Bearer \x01abc", b"Bearer caf\xc3\xa9", b"Bearer a\x7fb"])
def test_authorization_with_bytes_grpc_cannot_carry_is_401(
    service: RunningService, value: bytes,
) -> None:
    """A control or non-ASCII byte in authorization is 401, no 500 and no critical event."""
    answer = _raw_request(http_url(service),
                          b"GET /v1/tasks HTTP/1.1\r\nhost: x\r\nauthorization: " + value
                          + b"\r\nconnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body["error"] == "AUTHENTICATION_ERROR"
    assert '"level":"critical"' not in service.logs()


def test_headers_too_large_are_431_in_our_words(service: RunningService) -> None:
    """A 15 KB authorization header is 431 HEADER_TOO_LARGE (not 429 with grpc's text), and a
    request head past h11's buffer is 431 too, in the envelope."""
    url = http_url(service)
    answer = _raw_request(url, b"GET /v1/tasks HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
                          + b"a" * 15_000 + b"\r\nconnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {
        "error": "HEADER_TOO_LARGE",
        "message": "The authorization header is larger than the limit of 8192 bytes",
        "details": {"header": "authorization", "limit_bytes": 8192}}
    head = _raw_request(url, b"GET /v1/tasks HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 40_000)
    assert head.startswith(b"HTTP/1.1 431"), head[:300]
    assert json.loads(head.partition(b"\r\n\r\n")[2])["error"] == "HEADER_TOO_LARGE"
    assert b"grpc" not in answer.lower() and b"grpc" not in head.lower()


def test_message_over_grpc_limit_is_413_in_our_words(client: httpx.Client) -> None:
    """A 5 MB description (under --http-max-body 6 MiB, over gRPC's 4 MiB) is 413 with our
    message, not 429 "Too Many Requests" with grpc core's sizes."""
    response = client.post("/v1/tasks", json={"description": "d" * 5_000_000})
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"] == "PAYLOAD_TOO_LARGE"
    assert "larger than max" not in response.text and "retry-after" not in response.headers


class _Overloaded(tasks_pb2_grpc.TaskServiceServicer):
    """A TaskService whose GetTask ends CANCELLED, as grpc's server does when it sheds calls."""

    async def GetTask(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.CANCELLED, "Cancelled")


async def test_server_cancelled_is_503_with_retry_after_not_499() -> None:
    """CANCELLED from the server (never the HTTP caller's doing) is 503 CAPACITY_EXCEEDED with
    Retry-After through a real gateway, not 499 blaming the client."""
    server = grpc.aio.server()
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _Overloaded(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = gateway_channel(f"127.0.0.1:{port}")
    gateway = await start_gateway(create_app(channel), "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            response = await http.get("/v1/tasks/any")
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"error": "CAPACITY_EXCEEDED",
                                   "message": "The service is overloaded; retry later",
                                   "details": {}, "retry_after": 1.0}
    finally:
        await gateway.stop()
        await channel.close()
        await server.stop(None)


async def test_slow_body_is_408_after_the_body_timeout() -> None:
    """A body sent too slowly is 408 REQUEST_TIMEOUT in the envelope once --http-body-timeout
    has passed, and its connection is closed (the rest is never waited for)."""
    channel = gateway_channel("127.0.0.1:1")  # never called: the body never completes
    limits = HttpLimits(body_timeout=0.5)
    gateway = await start_gateway(create_app(channel, limits=limits), "127.0.0.1", 0,
                                  limits=limits)
    try:
        host, port = _port(gateway.url)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /v1/tasks HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 100\r\n\r\n{\"descr")
        await writer.drain()
        start = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
        took = time.monotonic() - start
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"connection: close" in answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {
            "error": "REQUEST_TIMEOUT", "message": "The request body was not received within 0.5s",
            "details": {"timeout_seconds": 0.5}}
        assert 0.4 < took < 3.0, took
    finally:
        await gateway.stop()
        await channel.close()
