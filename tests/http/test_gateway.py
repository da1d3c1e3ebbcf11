"""The sample's JSON gateway, end to end: ``python -m server --http-port 0``, httpx and grpcurl.

Each error is asked for twice, over HTTP and through grpcurl, and both must carry the same
error code, message and details (the ``octollm.errors.v1.ErrorEnvelope`` grpcurl decodes).
"""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.config import parse_args
from server.gateway import create_app, gateway_channel, start_gateway
from tests.reliability import faulty_service
from tests.reliability.support import launch, stop
from tests.service.harness import ROOT, Grpcurl, RunningService, running_service

ENVELOPE = "octollm.errors.v1.ErrorEnvelope"
GATEWAY_LINE = "http gateway on "


def http_url(service: RunningService) -> str:
    """The gateway's base URL, from the line the service printed at start."""
    for line in service.lines:
        if line.startswith(GATEWAY_LINE):
            return line[len(GATEWAY_LINE):]
    raise AssertionError(f"no gateway line in {service.lines}")


def same_error(response: httpx.Response, done: Grpcurl) -> dict[str, Any]:
    """Assert the HTTP body and grpcurl's status carry one error; return the HTTP body."""
    assert done.returncode != 0, done.stdout
    body: dict[str, Any] = response.json()
    envelope = done.detail(ENVELOPE)
    assert body["error"] == envelope["error_code"]
    assert body["message"] == done.status()["message"] == envelope["message"]
    assert body["details"] == envelope.get("details", {})
    return body


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with running_service(tmp_path_factory.mktemp("gateway"), "--http-port", "0",
                         "--rate-limit", "0") as running:
        yield running


@pytest.fixture(scope="module")
def client(service: RunningService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_url(service), timeout=30) as http:
        yield http


def _create(client: httpx.Client, description: str = "Summarise the design doc") -> str:
    response = client.post("/v1/tasks", json={"description": description, "priority": 3})
    assert response.status_code == 200, response.text
    task_id: str = response.json()["task"]["task_id"]
    return task_id


def test_every_route_round_trips_proto3_json(client: httpx.Client) -> None:
    """Create, get, list, execute, cancel and delete, with proto3 JSON bodies both ways."""
    created = client.post("/v1/tasks", json={"description": "Write the release notes",
                                             "priority": 7, "timeoutSeconds": 30,
                                             "requestId": "http-create-1"})
    assert created.status_code == 200
    task = created.json()["task"]
    assert (task["description"], task["priority"], task["timeout_seconds"]) == (
        "Write the release notes", 7, 30)
    assert task["status"] == "TASK_STATUS_PENDING"
    task_id = task["task_id"]
    again = client.post("/v1/tasks", json={"description": "Write the release notes",
                                           "priority": 7, "request_id": "http-create-1"})
    assert again.json()["task"]["task_id"] == task_id  # idempotent; either field spelling

    got = client.get(f"/v1/tasks/{task_id}").json()
    assert got["task"]["task_id"] == task_id
    assert [entry["status"] for entry in got["history"]] == ["TASK_STATUS_PENDING"]

    _create(client)
    first = client.get("/v1/tasks", params={"page_size": 1}).json()
    assert len(first["tasks"]) == 1 and first["next_page_token"]
    listed = client.get("/v1/tasks", params={"page_size": 1000}).json()
    assert task_id in [t["task_id"] for t in listed["tasks"]]

    executed = client.post(f"/v1/tasks/{task_id}:execute").json()["task"]
    assert executed["status"] == "TASK_STATUS_COMPLETED" and executed["result"]

    other = _create(client)
    cancelled = client.post(f"/v1/tasks/{other}:cancel")
    assert cancelled.json()["task"]["status"] == "TASK_STATUS_CANCELLED"

    deleted = client.delete(f"/v1/tasks/{task_id}")
    assert (deleted.status_code, deleted.json()) == (200, {})
    assert client.get(f"/v1/tasks/{task_id}").status_code == 404


def test_not_found_is_404_with_the_grpc_error(
    client: httpx.Client, service: RunningService,
) -> None:
    """GET of an unknown task: 404 over HTTP, NOT_FOUND over gRPC, one error."""
    response = client.get("/v1/tasks/no-such-task")
    assert response.status_code == 404
    body = same_error(response, service.call("GetTask", {"task_id": "no-such-task"}))
    assert body == {"error": "TASK_NOT_FOUND", "message": "Task no-such-task not found",
                    "details": {"task_id": "no-such-task"}}


def test_finished_task_cannot_be_cancelled_same_as_grpc(
    client: httpx.Client, service: RunningService,
) -> None:
    """A rejected state change: 400 FAILED_PRECONDITION on both sides."""
    task_id = _create(client)
    assert client.post(f"/v1/tasks/{task_id}:cancel").status_code == 200
    response = client.post(f"/v1/tasks/{task_id}:cancel")
    assert response.status_code == 400
    body = same_error(response, service.call("CancelTask", {"task_id": task_id}))
    assert body["error"] == "FAILED_PRECONDITION"


def test_every_violation_is_reported_as_on_grpc(
    client: httpx.Client, service: RunningService,
) -> None:
    """Several invalid fields: 400 VALIDATION_ERRORS listing each, as grpcurl shows."""
    bad = {"description": "   ", "priority": 99, "timeoutSeconds": -1}
    response = client.post("/v1/tasks", json=bad)
    assert response.status_code == 400
    body = same_error(response, service.call("CreateTask", bad))
    assert body["error"] == "VALIDATION_ERRORS"
    assert [item["field"] for item in body["details"]["errors"]] == [
        "description", "priority", "timeout_seconds"]


def test_request_that_does_not_fit_the_route_is_400(client: httpx.Client) -> None:
    """FastAPI's own validation (query type, body not an object) is 400 VALIDATION_ERRORS."""
    response = client.get("/v1/tasks", params={"page_size": "lots"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "VALIDATION_ERRORS", "message": "Validation failed with 1 error",
        "details": {"errors": [{
            "field": "query.page_size",
            "message": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing"}]}}
    not_object = client.post("/v1/tasks", json=["a", "list"])
    assert not_object.status_code == 400
    assert [e["field"] for e in not_object.json()["details"]["errors"]] == ["body"]


def test_body_that_is_not_the_message_is_invalid_input(client: httpx.Client) -> None:
    """Unknown fields or wrong JSON types: 400 INVALID_INPUT, no parser internals quoted."""
    for body in ({"description": "x", "colour": "red"}, {"description": "x", "priority": "hi"}):
        response = client.post("/v1/tasks", json=body)
        assert response.status_code == 400
        assert response.json() == {
            "error": "INVALID_INPUT",
            "message": "The request body is not a valid octollm.tasks.v1.CreateTaskRequest "
                       "in the proto3 JSON mapping",
            "details": {"message_type": "octollm.tasks.v1.CreateTaskRequest"}}


def test_request_id_is_echoed_forwarded_logged_and_counted(
    client: httpx.Client, service: RunningService,
) -> None:
    """One id: echoed over HTTP, sent on to the service, in both log events; errors counted."""
    response = client.get("/v1/tasks/missing-rid", headers={"x-request-id": "curl-rid-7"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "curl-rid-7"
    generated = client.get("/v1/tasks/missing-rid").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert client.get("/v1/tasks").headers["x-request-id"]  # successes carry one too

    events = [line for line in service.logs().splitlines() if "curl-rid-7" in line]
    assert any('"grpc_method":"GET /v1/tasks/{task_id}"' in line for line in events)
    assert any('"grpc_method":"/octollm.tasks.v1.TaskService/GetTask"' in line
               for line in events)
    assert any('"event":"http.request.failed"' in line and "GET /v1/tasks/{task_id}" in line
               for line in events)
    assert any('"event":"grpc.call.failed"' in line and "TaskService/GetTask" in line
               for line in events)

    assert service.metrics_url is not None
    metrics = httpx.get(service.metrics_url).text
    match = re.search(
        r'octollm_errors_total\{component="http",error_type="TASK_NOT_FOUND"\} (\S+)', metrics)
    assert match and float(match.group(1)) >= 2


def test_openapi_docs_list_every_route(client: httpx.Client) -> None:
    """/docs is served, and the OpenAPI document has the six routes."""
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {(path, method) for path, ops in paths.items() for method in ops} == {
        ("/v1/tasks", "post"), ("/v1/tasks", "get"), ("/v1/tasks/{task_id}", "get"),
        ("/v1/tasks/{task_id}", "delete"), ("/v1/tasks/{task_id}:execute", "post"),
        ("/v1/tasks/{task_id}:cancel", "post")}


def test_rate_limited_is_429_with_retry_after(tmp_path: Path) -> None:
    """Over the service's rate limit: 429 with Retry-After, the same error grpcurl gets."""
    with running_service(tmp_path, "--http-port", "0", "--rate-limit", "2",
                         "--rate-window", "60") as service:
        with httpx.Client(base_url=http_url(service), timeout=30) as http:
            responses = [http.get("/v1/tasks") for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 429]
        limited = responses[-1]
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        body = same_error(limited, service.call("ListTasks"))
        assert body["error"] == "RATE_LIMIT_EXCEEDED"
        assert body["retry_after"] > 0


def test_arm_unavailable_is_503_as_on_grpc(tmp_path: Path) -> None:
    """The arm is down: ExecuteTask is 503 ARM_UNAVAILABLE over HTTP, UNAVAILABLE on gRPC."""
    with running_service(tmp_path, "--http-port", "0", "--rate-limit", "0", "--arm-down",
                         "--arm-attempts", "1") as service:
        with httpx.Client(base_url=http_url(service), timeout=30) as http:
            first, second = _create(http), _create(http)
            response = http.post(f"/v1/tasks/{first}:execute")
        assert response.status_code == 503
        body = same_error(response, service.call("ExecuteTask", {"task_id": second}))
        assert body["error"] == "ARM_UNAVAILABLE"
        assert service.arm_target not in response.text


def test_unexpected_failure_is_generic_and_leaks_nothing(tmp_path: Path) -> None:
    """A bug behind the service: 500 INTERNAL_ERROR, no secret or path over HTTP or gRPC."""
    running = launch(tmp_path, "--http-port", "0", "--rate-limit", "0",
                     module="tests.reliability.faulty_service",
                     env={"OCTOLLM_TEST_FAULT": "runtime", "OCTOLLM_TEST_FAULT_OPS": "get"})
    try:
        url = http_url(running)  # type: ignore[arg-type]
        response = httpx.get(f"{url}/v1/tasks/any-task", timeout=30)
        assert response.status_code == 500
        body = same_error(response, running.call("GetTask", {"task_id": "any-task"}))
        assert body == {"error": "INTERNAL_ERROR", "message": "An internal error occurred",
                        "details": {}}
        for secret in (faulty_service.SECRET, faulty_service.SECRET_PATH):
            assert secret not in response.text
            assert all(secret not in value for value in response.headers.values())
    finally:
        stop(running)


def test_http_port_flag() -> None:
    """--http-port: 8080 by default, -1 off, 0 a free port; out of range is refused."""
    assert parse_args([], env={}).http_port == 8080
    assert parse_args(["--http-port", "-1"], env={}).http_port == -1
    with pytest.raises(SystemExit):
        parse_args(["--http-port", "-2"], env={})


def test_launchers_turn_the_gateway_off(tmp_path: Path) -> None:
    """The test launchers pass --http-port -1: parallel services never collide on 8080."""
    with running_service(tmp_path) as service:
        assert not any(line.startswith(GATEWAY_LINE) for line in service.lines)


def test_sigterm_as_soon_as_ready_stops_gracefully(tmp_path: Path) -> None:
    """SIGTERM right after the ready lines: exit 0, gateway included (the signal handlers
    used to be installed after the lines were printed, so the default action killed it)."""
    with running_service(tmp_path, "--http-port", "0") as service:
        assert service.terminate() == 0


def test_bearer_token_is_passed_on(tmp_path: Path) -> None:
    """With --auth-token, the caller's authorization header reaches the service: 401 without."""
    with running_service(tmp_path, "--http-port", "0", "--auth-token", "sesame") as service:
        with httpx.Client(base_url=http_url(service), timeout=30) as http:
            refused = http.get("/v1/tasks")
            allowed = http.get("/v1/tasks", headers={"authorization": "Bearer sesame"})
        assert refused.status_code == 401
        assert refused.json()["error"] == "AUTHENTICATION_ERROR"
        assert "sesame" not in refused.text
        assert allowed.status_code == 200


def test_taken_http_port_stops_the_service_at_start(tmp_path: Path) -> None:
    """A taken --http-port is an error at start (exit 1), never a silently shared port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "server", "--port", "0", "--metrics-port", "-1",
             "--http-port", str(port), "--db", str(tmp_path / "tasks.db")],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "python -m server:" in done.stderr and "in use" in done.stderr
    assert "http gateway on" not in done.stdout


async def test_gateway_answers_without_the_delayed_ack_stall() -> None:
    """Responses are not held back ~40 ms each (Nagle + delayed ACK): a socket bound with
    protocol 0 made asyncio skip TCP_NODELAY on every accepted connection."""
    channel = gateway_channel("127.0.0.1:1")  # never called: /docs is served by FastAPI
    gateway = await start_gateway(create_app(channel), "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            times = []
            for _ in range(15):
                start = time.perf_counter()
                response = await http.get("/docs")
                times.append(time.perf_counter() - start)
                assert response.status_code == 200
        # Linux delays an ACK at least 40 ms: the stalled median is above that, a sound one
        # is about 1 ms on loopback.
        assert statistics.median(times) < 0.03, times
    finally:
        await gateway.stop()
        await channel.close()
