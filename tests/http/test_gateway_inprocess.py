"""The gateway's request handling in this process: a real ``grpc.aio`` TaskService and the
gateway (uvicorn) on free loopback ports, called with httpx.

The service here is a recorder: it answers each call from its ``task_id`` and keeps what it
received (the request, its metadata), so a test sees what the gateway sent and what the HTTP
caller got back. ``tests/http/test_gateway.py`` runs the real sample service in a subprocess;
these are the quick ones, also run per mutant by ``make mutation``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import re
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from structlog.testing import capture_logs

from octollm_grpc import codes, errors
from octollm_grpc.server import BearerAuth, ServerMetrics
from octollm_grpc.server.aio import server_interceptors
from server.gateway import (
    SERVICE,
    bind_host,
    create_app,
    gateway_channel,
    https_settings,
    start_gateway,
)
from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from server.http_callers import CLIENT_KEY, PROOF_KEY, CallerIdentity
from server.http_limits import HttpLimits
from tests.security.pki import Pki

PENDING = tasks_pb2.TaskStatus.Value("TASK_STATUS_PENDING")
SERVICE_DOC = Path(__file__).parents[2] / "docs" / "service.md"
TOO_LARGE = "Received message larger than max (5000000 vs. 4194304)"


class Recorder(tasks_pb2_grpc.TaskServiceServicer):
    """A TaskService answering from the task id, recording every call it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, str]]] = []
        self.arrived = asyncio.Event()

    def _record(self, method: str, request: Any,
                context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = {key: value for key, value in context.invocation_metadata() or ()
                    if isinstance(value, str)}
        self.calls.append((method, request, metadata))
        self.arrived.set()

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.calls]

    @staticmethod
    def task(task_id: str) -> tasks_pb2.Task:
        return tasks_pb2.Task(task_id=task_id, description="Summarise", priority=3,
                              timeout_seconds=30, status=PENDING, request_id="r-1")

    async def _answer(self, task_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Fail as the task id says; return to answer normally."""
        failures = sum(1 for _, request, _ in self.calls
                       if getattr(request, "task_id", None) == task_id)
        if task_id == "missing":
            raise errors.TaskNotFoundError(task_id)
        if task_id == "quota":
            raise errors.RateLimitError(limit=1, window=60, retry_after=30)
        if task_id == "network":
            raise errors.NetworkError("The relay is down", details={"relay": "r-2"})
        if task_id == "unavailable" or (task_id == "unavailable-once" and failures == 1):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "arm down")
        if task_id == "too-large":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_LARGE)
        if task_id == "metadata":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "received metadata size exceeds hard limit "
                                "(value length 20000 vs. 16384)")
        if task_id == "cancelled":
            await context.abort(grpc.StatusCode.CANCELLED, "Cancelled")
        if task_id == "internal":
            await context.abort(grpc.StatusCode.INTERNAL, "RST_STREAM from ipv4:10.9.9.9:443")
        if task_id == "hang":
            await asyncio.Event().wait()

    async def CreateTask(self, request: Any, context: Any) -> Any:
        self._record("CreateTask", request, context)
        return tasks_pb2.CreateTaskResponse(task=tasks_pb2.Task(
            task_id="t-new", description=request.description, priority=request.priority,
            timeout_seconds=request.timeout_seconds, request_id=request.request_id))

    async def GetTask(self, request: Any, context: Any) -> Any:
        self._record("GetTask", request, context)
        await self._answer(request.task_id, context)
        return tasks_pb2.GetTaskResponse(task=self.task(request.task_id), history=[
            tasks_pb2.TaskHistoryEntry(status=PENDING, note="created")])

    async def ListTasks(self, request: Any, context: Any) -> Any:
        self._record("ListTasks", request, context)
        return tasks_pb2.ListTasksResponse(tasks=[self.task("t-1")],
                                           next_page_token=f"after-{request.page_token}")

    async def DeleteTask(self, request: Any, context: Any) -> Any:
        self._record("DeleteTask", request, context)
        await self._answer(request.task_id, context)
        return tasks_pb2.DeleteTaskResponse()

    async def ExecuteTask(self, request: Any, context: Any) -> Any:
        self._record("ExecuteTask", request, context)
        await self._answer(request.task_id, context)
        task = self.task(request.task_id)
        task.result = "done"
        return tasks_pb2.ExecuteTaskResponse(task=task)

    async def CancelTask(self, request: Any, context: Any) -> Any:
        self._record("CancelTask", request, context)
        await self._answer(request.task_id, context)
        return tasks_pb2.CancelTaskResponse(task=self.task(request.task_id))


@contextlib.asynccontextmanager
async def gateway_to(recorder: Recorder, *, grace: float = 5.0,
                     **app_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway (started by ``start_gateway``) in front of ``recorder``; an httpx client on
    it, closed, and everything stopped, at the end."""
    server = grpc.aio.server(interceptors=server_interceptors())
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(recorder, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = gateway_channel(f"127.0.0.1:{port}")
    gateway = await start_gateway(create_app(channel, **app_options), "127.0.0.1", 0,
                                  limits=app_options.get("limits"), grace=grace)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            http.gateway = gateway  # type: ignore[attr-defined]
            yield http
    finally:
        await gateway.stop()
        await channel.close()
        await server.stop(None)


def _task_json(task_id: str) -> dict[str, Any]:
    return {"task_id": task_id, "description": "Summarise", "priority": 3,
            "timeout_seconds": 30, "status": "TASK_STATUS_PENDING", "request_id": "r-1"}


# Each test starts one gateway (FastAPI app, uvicorn, JSON worker) and checks several
# behaviours on it: ``make mutation`` runs these per mutant, so fewer starts is minutes saved.


async def _routes_and_bodies(http: httpx.AsyncClient, recorder: Recorder) -> None:
    """Every route sends its request message to its RPC and renders the response with the
    proto field names (``task_id``), as grpcurl prints them; a body may use either spelling."""
    got = await http.get("/v1/tasks/t-1")
    assert (got.status_code, got.json()) == (200, {
        "task": _task_json("t-1"),
        "history": [{"status": "TASK_STATUS_PENDING", "note": "created"}]})
    listed = await http.get("/v1/tasks", params={"page_size": 7, "page_token": "p"})
    assert listed.json() == {"tasks": [_task_json("t-1")], "next_page_token": "after-p"}
    default = await http.get("/v1/tasks")
    assert default.json()["next_page_token"] == "after-"
    executed = await http.post("/v1/tasks/t-2:execute")
    assert executed.json() == {"task": {**_task_json("t-2"), "result": "done"}}
    cancelled = await http.post("/v1/tasks/t-3:cancel")
    assert cancelled.json() == {"task": _task_json("t-3")}
    deleted = await http.delete("/v1/tasks/t-4")
    assert (deleted.status_code, deleted.json()) == (200, {})
    created = await http.post("/v1/tasks", json={
        "description": "Write notes", "priority": 7, "timeoutSeconds": 30,
        "request_id": "http-1"})
    assert (created.status_code, created.json()) == (200, {"task": {
        "task_id": "t-new", "description": "Write notes", "priority": 7,
        "timeout_seconds": 30, "request_id": "http-1"}})
    assert recorder.methods() == ["GetTask", "ListTasks", "ListTasks", "ExecuteTask",
                                  "CancelTask", "DeleteTask", "CreateTask"]
    assert [request for _, request, _ in recorder.calls] == [
        tasks_pb2.GetTaskRequest(task_id="t-1"),
        tasks_pb2.ListTasksRequest(page_size=7, page_token="p"),
        tasks_pb2.ListTasksRequest(),
        tasks_pb2.ExecuteTaskRequest(task_id="t-2"),
        tasks_pb2.CancelTaskRequest(task_id="t-3"),
        tasks_pb2.DeleteTaskRequest(task_id="t-4"),
        tasks_pb2.CreateTaskRequest(description="Write notes", priority=7, timeout_seconds=30,
                                    request_id="http-1"),
    ]


NOT_THE_MESSAGE = ("The request body is not a valid octollm.tasks.v1.CreateTaskRequest in the "
                   "proto3 JSON mapping")


async def _bodies_that_are_not_the_message(http: httpx.AsyncClient) -> None:
    """Not JSON, a field of the wrong type (named), an unknown field (never named: it is the
    caller's text), not an object: each 400 in the envelope."""
    answers = [await http.post("/v1/tasks", content=body,
                               headers={"content-type": "application/json"})
               for body in (b"{\"description\": ", b"{\"priority\": \"high\"}",
                            b"{\"colour\": 1}", b"[1]")]
    message_type = {"message_type": "octollm.tasks.v1.CreateTaskRequest"}
    assert [(answer.status_code, answer.json()) for answer in answers] == [
        (400, {"error": "INVALID_INPUT", "message": "The request body is not valid JSON",
               "details": message_type}),
        (400, {"error": "INVALID_INPUT", "message": NOT_THE_MESSAGE,
               "details": {**message_type, "field": "priority"}}),
        (400, {"error": "INVALID_INPUT", "message": NOT_THE_MESSAGE, "details": message_type}),
        (400, {"error": "VALIDATION_ERRORS", "message": "Validation failed with 1 error",
               "details": {"errors": [{"field": "body", "message": "Input should be a valid "
                                       "dictionary", "type": "dict_type"}]}}),
    ]


async def _headers_passed_on(http: httpx.AsyncClient, recorder: Recorder) -> None:
    """The HTTP request's id is the call's ``x-request-id``; ``authorization`` is passed on
    when sent, and only then."""
    response = await http.get("/v1/tasks/t-1", headers={
        "x-request-id": "req-0001", "authorization": "Bearer abc"})
    assert response.headers["x-request-id"] == "req-0001"
    bare = await http.get("/v1/tasks/t-1")
    metadata, generated = recorder.calls[-2][2], recorder.calls[-1][2]
    assert (metadata["x-request-id"], metadata["authorization"]) == ("req-0001", "Bearer abc")
    assert CLIENT_KEY not in metadata and PROOF_KEY not in metadata  # no identity given
    assert generated["x-request-id"] == bare.headers["x-request-id"] != ""
    assert "authorization" not in generated


async def _openapi(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    assert document["info"]["title"] == "octollm-grpc sample task service (HTTP/JSON gateway)"
    assert document["info"]["version"] == "1"
    assert document["info"]["description"] == (
        f"Each route calls one `{SERVICE}` RPC. Bodies are the proto3 JSON mapping of its "
        "request and response messages; errors carry the same error code, message and details "
        "as on gRPC.")
    summaries = {(path, verb): operation["summary"]
                 for path, verbs in document["paths"].items()
                 for verb, operation in verbs.items()}
    assert summaries == {
        ("/v1/tasks", "post"): "CreateTask", ("/v1/tasks", "get"): "ListTasks",
        ("/v1/tasks/{task_id}", "get"): "GetTask",
        ("/v1/tasks/{task_id}", "delete"): "DeleteTask",
        ("/v1/tasks/{task_id}:execute", "post"): "ExecuteTask",
        ("/v1/tasks/{task_id}:cancel", "post"): "CancelTask"}
    create = document["paths"]["/v1/tasks"]["post"]
    assert create["requestBody"]["required"] is True
    assert create["requestBody"]["content"]["application/json"]["example"] == {
        "description": "Summarize the quarterly report", "priority": 5}
    assert create["tags"] == ["tasks"]
    statuses = {"200", "400", "401", "404", "408", "413", "429", "431", "500", "502", "503",
                "504"}
    # No FastAPI 422: a request that does not fit a route is 400 VALIDATION_ERRORS.
    assert {path: sorted(verbs[verb]["responses"]) for path, verbs in document["paths"].items()
            for verb in verbs} == {path: sorted(statuses) for path in document["paths"]}
    assert list(document["components"]["schemas"]) == ["ErrorBody"]
    assert create["responses"]["413"]["description"] == (
        "PAYLOAD_TOO_LARGE (the body is over --http-max-body)")
    # Each code is listed under the HTTP status the code table gives it, and every code the
    # service's documentation says its RPCs answer with is listed.
    listed = {code: int(status) for status, response in create["responses"].items()
              for code in re.findall(r"\b([A-Z][A-Z_]+[A-Z]) \(", response["description"])}
    assert listed == {code: codes.mapping_for_class(codes.class_for_error_code(code)).http_status
                      for code in listed}
    documented = re.findall(r"`([A-Z][A-Z_]+[A-Z])`", SERVICE_DOC.read_text().split(
        "| RPC |")[1].split("\n\n")[0])
    assert "FAILED_PRECONDITION" in documented  # the table's gRPC code, not an error code
    assert set(documented) - {"FAILED_PRECONDITION"} <= set(listed)
    assert {"REQUEST_TIMEOUT", "PAYLOAD_TOO_LARGE", "HEADER_TOO_LARGE", "NETWORK_ERROR",
            "CAPACITY_EXCEEDED", "AUTHENTICATION_ERROR", "INTERNAL_ERROR"} <= set(listed)


async def test_routes_bodies_headers_and_docs() -> None:
    """Each route's RPC and JSON, bodies refused before any call, the request id and the
    authorization header passed on, and the OpenAPI document naming every route."""
    recorder = Recorder()
    async with gateway_to(recorder) as http:
        await _routes_and_bodies(http, recorder)
        recorder.calls.clear()
        await _bodies_that_are_not_the_message(http)
        assert recorder.calls == []
        await _headers_passed_on(http, recorder)
        await _openapi(http)


async def _raw(url: str, request: bytes) -> bytes:
    """Send ``request`` on a new connection; everything answered until the server closes."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


async def test_limits_refuse_before_any_call() -> None:
    """Bodies over ``max_body`` (declared: answered at once, before the body arrives; or as a
    chunked body passes it) are 413 and close the connection; one exactly at the limit is
    taken. A body slower than ``body_timeout`` is 408, a head slower than ``header_timeout``
    is closed. An authorization header over ``max_header`` is 431, one gRPC cannot carry 401,
    a page size out of range 400: all before any call."""
    recorder = Recorder()
    limits = HttpLimits(max_body=16, max_header=20, body_timeout=0.3, header_timeout=0.3)
    too_large = {"error": "PAYLOAD_TOO_LARGE",
                 "message": "The request body is larger than the limit of 16 bytes",
                 "details": {"limit_bytes": 16}}
    exact = b"{\"priority\": 12}"
    assert len(exact) == 16

    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4):
            yield body[start:start + 4]

    async with gateway_to(recorder, limits=limits) as http:
        fits = await http.post("/v1/tasks", content=exact)
        fits_chunked = await http.post("/v1/tasks", content=chunks(exact))
        assert (fits.status_code, fits_chunked.status_code) == (200, 200)
        chunked = await http.post("/v1/tasks", content=chunks(exact + b" "))
        assert (chunked.status_code, chunked.json()) == (413, too_large)
        assert chunked.headers["connection"] == "close"
        head = b"POST /v1/tasks HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        declared = await _raw(http.gateway.url,  # type: ignore[attr-defined]
                              head + b"content-length: 17\r\n\r\n{\"pri")
        assert declared.startswith(b"HTTP/1.1 413 ")
        assert b"\r\nconnection: close\r\n" in declared
        assert json.loads(declared.partition(b"\r\n\r\n")[2]) == too_large
        slow = await _raw(http.gateway.url,  # type: ignore[attr-defined]
                          head + b"content-length: 16\r\n\r\n{\"pri")
        # start_gateway's limits reach uvicorn: a head not sent within header_timeout is
        # closed without an answer (the default's 10 s would outlast _raw's wait).
        unfinished = await _raw(http.gateway.url,  # type: ignore[attr-defined]
                                b"GET /v1/tasks HTTP/1.1\r\nhost: x\r\n")
        assert unfinished == b""
        assert slow.startswith(b"HTTP/1.1 408 ")
        assert json.loads(slow.partition(b"\r\n\r\n")[2]) == {
            "error": "REQUEST_TIMEOUT",
            "message": "The request body was not received within 0.3s",
            "details": {"timeout_seconds": 0.3}}
        long = await http.get("/v1/tasks/t-1", headers={"authorization": "B" * 21})
        control = await http.get("/v1/tasks/t-1", headers={"authorization": "Bearer \x01x"})
        page = await http.get("/v1/tasks", params={"page_size": 1001})
        header_fits = await http.get("/v1/tasks/t-1", headers={"authorization": "B" * 20})
    assert (long.status_code, long.json()) == (431, {
        "error": "HEADER_TOO_LARGE",
        "message": "The authorization header is larger than the limit of 20 bytes",
        "details": {"header": "authorization", "limit_bytes": 20}})
    assert (control.status_code, control.json()["message"]) == (
        401, "Malformed authorization header: expected Bearer")
    assert page.status_code == 400
    assert page.json()["message"] == "page_size must be between 1 and 1000"
    assert header_fits.status_code == 200
    assert recorder.methods() == ["CreateTask", "CreateTask", "GetTask"]


async def test_credentials_are_checked_first_and_the_caller_named() -> None:
    """With a bearer check, a bad or missing token is 401 and the service sees nothing (not
    even a body read); a good one's call names its HTTP client and carries the proof."""
    auth = BearerAuth(lambda token: {"tasks"} if token == "good" else None)
    recorder = Recorder()
    async with gateway_to(recorder, identity=CallerIdentity(auth, secret="proof")) as http:
        refused = await http.post("/v1/tasks", content=b"not json",
                                  headers={"authorization": "Bearer bad"})
        missing = await http.get("/v1/tasks/t-1")
        assert recorder.calls == []
        good = await http.get("/v1/tasks/t-1", headers={"authorization": "Bearer good"})
    assert refused.status_code == 401 and refused.json()["error"] == "AUTHENTICATION_ERROR"
    assert missing.status_code == 401
    assert good.status_code == 200
    metadata = recorder.calls[0][2]
    assert metadata[CLIENT_KEY].startswith("principal:")
    assert (metadata[PROOF_KEY], metadata["authorization"]) == ("proof", "Bearer good")


async def test_service_errors_keep_their_code_and_get_their_http_status() -> None:
    """A typed error is rendered with its table's status (and counted); grpc's own bare
    RESOURCE_EXHAUSTED and CANCELLED are said in our words."""
    recorder = Recorder()
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry, component="http")
    async with gateway_to(recorder, metrics=metrics,
                          limits=HttpLimits(max_header=100, max_body=1000)) as http:
        missing = await http.get("/v1/tasks/missing")
        quota = await http.get("/v1/tasks/quota")
        too_large = await http.post("/v1/tasks/too-large:cancel")
        metadata = await http.post("/v1/tasks/metadata:cancel")
        cancelled = await http.get("/v1/tasks/cancelled")
        network = await http.post("/v1/tasks/network:execute")
        with capture_logs() as logs:
            internal = await http.post("/v1/tasks/internal:cancel")
    assert (missing.status_code, missing.json()) == (404, {
        "error": "TASK_NOT_FOUND", "message": "Task missing not found",
        "details": {"task_id": "missing"}})
    assert (quota.status_code, quota.headers["retry-after"]) == (429, "30")
    assert quota.json()["error"] == "RATE_LIMIT_EXCEEDED"
    assert (too_large.status_code, too_large.json()) == (413, {
        "error": "PAYLOAD_TOO_LARGE",
        "message": "The request body is larger than the limit of 1000 bytes",
        "details": {"limit_bytes": 1000}})
    assert (metadata.status_code, metadata.json()["details"]) == (
        431, {"header": "request", "limit_bytes": 100})
    assert (cancelled.status_code, cancelled.headers["retry-after"]) == (503, "1")
    assert cancelled.json() == {"error": "CAPACITY_EXCEEDED",
                                "message": "The service is overloaded; retry later",
                                "details": {}, "retry_after": 1.0}
    # RESOURCE_EXHAUSTED (rate limit) and CANCELLED are not retried: one call each.
    # The service's own NetworkError (with its ErrorInfo) keeps its words.
    assert (network.status_code, network.json()) == (502, {
        "error": "NETWORK_ERROR", "message": "The relay is down", "details": {"relay": "r-2"}})
    assert [request.task_id for _, request, _ in recorder.calls] == [
        "missing", "quota", "too-large", "metadata", "cancelled", "network", "internal"]
    # A bare INTERNAL is the transport's text: 500 with nothing of it; the log keeps it.
    assert (internal.status_code, internal.json()) == (500, {
        "error": "INTERNAL_ERROR", "message": "An internal error occurred", "details": {}})
    assert [event for event in logs if event["event"] == "http.service.failed"] == [{
        "event": "http.service.failed", "log_level": "warning", "grpc_code": "INTERNAL",
        "grpc_message": "RST_STREAM from ipv4:10.9.9.9:443"}]
    assert registry.get_sample_value("octollm_errors_total", {
        "error_type": "TASK_NOT_FOUND", "component": "http"}) == 1.0

async def test_reads_are_retried_but_executions_are_not_and_open_only_their_breaker() -> None:
    """GetTask is retried on UNAVAILABLE; ExecuteTask never is (the service already retried
    the arm), and its failures open its own breaker, named for the service, not the others."""
    recorder = Recorder()
    async with gateway_to(recorder) as http:
        retried = await http.get("/v1/tasks/unavailable-once")
        assert retried.status_code == 200
        assert recorder.methods() == ["GetTask", "GetTask"]
        recorder.calls.clear()
        for _ in range(5):
            failed = await http.post("/v1/tasks/unavailable:execute")
            assert failed.status_code == 502
        assert recorder.methods() == ["ExecuteTask"] * 5
        opened = await http.post("/v1/tasks/unavailable:execute")
        other = await http.get("/v1/tasks/t-1")
    assert recorder.methods() == ["ExecuteTask"] * 5 + ["GetTask"]
    assert (opened.status_code, opened.json()["error"]) == (503, "CIRCUIT_OPEN")
    assert opened.json()["details"] == {"target": SERVICE}
    assert opened.json()["message"].startswith(f"Circuit breaker for {SERVICE} is open; ")
    assert 0 < opened.json()["retry_after"] <= 30
    assert other.status_code == 200

async def test_each_call_has_the_gateway_s_deadline() -> None:
    recorder = Recorder()
    async with gateway_to(recorder, timeout=0.2) as http:
        response = await http.get("/v1/tasks/hang")
    assert response.status_code == 504
    assert response.json()["error"] == "TIMEOUT_ERROR"

async def test_stop_answers_requests_past_the_grace_period_with_503() -> None:
    """A request still running when the grace period ends gets the envelope with
    Retry-After and ``connection: close``, and the cut is logged with its path; refusals not
    yet logged are logged at stop, and the JSON worker process is gone."""
    recorder = Recorder()
    with capture_logs() as logs:
        async with gateway_to(recorder, grace=0.1) as http:
            refused = await _raw(http.gateway.url,  # type: ignore[attr-defined]
                                 b"NOT HTTP\r\n\r\n")
            assert refused.startswith(b"HTTP/1.1 400 ")
            pending = asyncio.create_task(http.get("/v1/tasks/hang"))
            # Bounded: a request that fails before reaching the service must not hang here.
            arrived = asyncio.create_task(recorder.arrived.wait())
            await asyncio.wait([arrived, pending], timeout=10,
                               return_when=asyncio.FIRST_COMPLETED)
            assert recorder.arrived.is_set() and not pending.done()
            await http.gateway.stop()  # type: ignore[attr-defined]
            response = await pending
    for _ in range(200):  # the worker was told to stop; it exits once it has read that
        if not multiprocessing.active_children():
            break
        await asyncio.sleep(0.05)
    assert multiprocessing.active_children() == []
    assert [event for event in logs if event["event"] == "http.connections.refused"] == [
        {"event": "http.connections.refused", "log_level": "warning", "count": 1,
         "reasons": {"invalid_http": 1}, "interval": 1.0}]
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert response.headers["connection"] == "close"
    assert response.json() == {
        "error": "CAPACITY_EXCEEDED",
        "message": "The server is shutting down; retry on another replica",
        "details": {}, "retry_after": 1.0}
    cuts = [event for event in logs if event["event"] == "http.request.cut"]
    assert cuts == [{"event": "http.request.cut", "log_level": "warning",
                     "reason": "grace period over", "path": "/v1/tasks/hang"}]


def test_bind_host_unwraps_bracketed_ipv6_only() -> None:
    assert bind_host("[::1]") == "::1"
    assert bind_host("127.0.0.1") == "127.0.0.1"
    assert bind_host("[::1") == "[::1"
    assert bind_host("::1]") == "::1]"


async def test_ipv6_gateway_url_is_bracketed_and_serves() -> None:
    channel = gateway_channel("127.0.0.1:1")  # never called: /openapi.json is FastAPI's
    gateway = await start_gateway(create_app(channel), "[::1]", 0)
    try:
        assert gateway.url.startswith("http://[::1]:")
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            assert (await http.get("/openapi.json")).status_code == 200
    finally:
        await gateway.stop()
        await channel.close()


async def test_a_taken_port_fails_at_once() -> None:
    channel = gateway_channel("127.0.0.1:1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError):
            await start_gateway(create_app(channel), "127.0.0.1", taken.getsockname()[1])
    await channel.close()


def test_https_settings_ask_for_a_client_certificate_only_with_a_ca() -> None:
    assert https_settings("c.pem", "k.pem") == {"ssl_certfile": "c.pem",
                                                "ssl_keyfile": "k.pem"}
    assert https_settings("c.pem", "k.pem", "ca.pem") == {
        "ssl_certfile": "c.pem", "ssl_keyfile": "k.pem", "ssl_ca_certs": "ca.pem",
        "ssl_cert_reqs": ssl.CERT_REQUIRED}


async def test_https_gateway_serves_over_tls(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    pair = pki.server("localhost", "127.0.0.1")
    channel = gateway_channel("127.0.0.1:1")
    gateway = await start_gateway(create_app(channel), "127.0.0.1", 0,
                                  tls=https_settings(str(pair.cert_file), str(pair.key_file)))
    try:
        assert gateway.url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30,
                                     verify=ssl.create_default_context(cafile=pki.ca_file)) as http:
            assert (await http.get("/openapi.json")).status_code == 200
    finally:
        await gateway.stop()
        await channel.close()


async def test_gateway_channel_calls_over_tls_and_counts_in_its_registry(tmp_path: Path) -> None:
    """``gateway_channel``'s credentials reach the service over TLS and its registry gets the
    client metrics; ``create_app`` without ``metrics`` counts nothing in the default
    registry."""
    pki = Pki(tmp_path)
    pair = pki.server("localhost", "127.0.0.1")
    recorder = Recorder()
    server = grpc.aio.server(interceptors=server_interceptors())
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(recorder, server)  # type: ignore[no-untyped-call]
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(pair.key_file.read_bytes(), pair.cert_file.read_bytes())]))
    await server.start()
    registry = CollectorRegistry()
    channel = gateway_channel(f"127.0.0.1:{port}", registry,
                              grpc.ssl_channel_credentials(pki.ca_pem))
    labels = {"error_type": "TASK_NOT_FOUND", "component": "http"}
    before = REGISTRY.get_sample_value("octollm_errors_total", labels)
    gateway = await start_gateway(create_app(channel, timeout=10), "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            found = await http.get("/v1/tasks/t-1")
            missing = await http.get("/v1/tasks/missing")
    finally:
        await gateway.stop()
        await channel.close()
        await server.stop(None)
    assert (found.status_code, missing.status_code) == (200, 404)
    assert recorder.methods() == ["GetTask", "GetTask"]
    method = {"grpc_service": SERVICE, "grpc_method": "GetTask", "grpc_type": "unary"}
    assert registry.get_sample_value("grpc_client_started_total", method) == 2.0
    assert registry.get_sample_value("octollm_client_attempts_total", {
        **method, "grpc_code": "NotFound"}) == 1.0
    assert REGISTRY.get_sample_value("octollm_errors_total", labels) == before


async def test_an_unreachable_service_is_502_in_our_words() -> None:
    """grpc's own text for a failed connection names the service's internal address: the HTTP
    caller gets 502 NETWORK_ERROR naming the service instead."""
    channel = gateway_channel("127.0.0.1:1")  # nothing listens on port 1
    gateway = await start_gateway(create_app(channel), "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            with capture_logs() as logs:
                response = await http.get("/v1/tasks/t-1")
    finally:
        await gateway.stop()
        await channel.close()
    assert (response.status_code, response.json()) == (502, {
        "error": "NETWORK_ERROR", "message": f"{SERVICE} could not be reached; retry later",
        "details": {"target": SERVICE}})
    failed = [event for event in logs if event["event"] == "http.service.failed"]
    assert [(event["grpc_code"], "127.0.0.1:1" in event["grpc_message"]) for event in failed] == [
        ("UNAVAILABLE", True)]
