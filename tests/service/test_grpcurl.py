"""End to end through the real grpcurl binary against ``python -m server`` in a subprocess.

``docs/walkthrough.md`` runs here as written (``test_walkthrough_runs_as_written``); every
error it shows is also checked on its own here: its gRPC code (grpcurl exits with
64 + code) and the details grpcurl decodes through the server's reflection.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.harness import GRPCURL, ROOT, SERVICE, RunningService, running_service
from tests.service.walkthrough import steps, walkthrough

# grpcurl's exit status for a failed call is 64 + the gRPC status code.
INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION = 64 + 3, 64 + 5, 64 + 9
RESOURCE_EXHAUSTED, UNAVAILABLE, UNAUTHENTICATED = 64 + 8, 64 + 14, 64 + 16
DEADLINE_EXCEEDED = 64 + 4


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with running_service(tmp_path_factory.mktemp("grpcurl")) as running:
        yield running


def _create(service: RunningService, **fields: object) -> dict[str, object]:
    done = service.call("CreateTask", {"description": "Summarise the design doc", **fields})
    assert done.returncode == 0, done.stderr
    task: dict[str, object] = done.json()["task"]
    return task


def test_list_shows_task_service_health_and_reflection(service: RunningService) -> None:
    """`grpcurl list` names the task service, the health service and reflection."""
    done = service.grpcurl("list")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == sorted([SERVICE, "grpc.health.v1.Health",
                                          "grpc.reflection.v1alpha.ServerReflection"])


def test_describe_shows_every_rpc(service: RunningService) -> None:
    """`grpcurl describe` shows all RPCs, WatchTask as a server stream."""
    done = service.grpcurl("describe", SERVICE)
    assert done.returncode == 0, done.stderr
    for rpc in ("CreateTask", "GetTask", "ListTasks", "CancelTask", "ExecuteTask",
                "ExecuteBatch", "DeleteTask"):
        assert f"rpc {rpc} ( .octollm.tasks.v1.{rpc}Request )" in done.stdout
    assert ("rpc WatchTask ( .octollm.tasks.v1.WatchTaskRequest ) returns "
            "( stream .octollm.tasks.v1.WatchTaskResponse );") in done.stdout


@pytest.mark.parametrize("symbol", ["google.rpc.BadRequest", "google.rpc.RetryInfo",
                                    "octollm.errors.v1.ErrorEnvelope"])
def test_reflection_serves_error_detail_types(service: RunningService, symbol: str) -> None:
    """Reflection describes the error-detail messages, which is how grpcurl decodes details."""
    done = service.grpcurl("describe", symbol)
    assert done.returncode == 0, done.stderr
    assert f"{symbol} is a message:" in done.stdout


def test_create_get_list(service: RunningService) -> None:
    """A created task can be read back, with its history, and is listed."""
    task = _create(service, priority=7, timeout_seconds=30, request_id="walkthrough-1")
    assert task["status"] == "TASK_STATUS_PENDING"
    assert (task["priority"], task["timeout_seconds"]) == (7, 30)
    got = service.call("GetTask", {"task_id": task["task_id"]})
    assert got.returncode == 0, got.stderr
    assert got.json()["task"] == task
    assert [h["status"] for h in got.json()["history"]] == ["TASK_STATUS_PENDING"]
    listed = service.call("ListTasks", {"page_size": 1000})
    assert task["task_id"] in [t["task_id"] for t in listed.json()["tasks"]]


def test_list_pages_with_tokens(service: RunningService) -> None:
    """ListTasks pages: each page's token leads to the next, the last page has none."""
    ids = [_create(service)["task_id"] for _ in range(3)]
    seen: list[str] = []
    token = ""
    for _ in range(100):  # bounded: far more pages than tasks in this module
        page = service.call("ListTasks", {"page_size": 2, "page_token": token}).json()
        seen += [t["task_id"] for t in page.get("tasks", [])]
        token = page.get("next_page_token", "")
        if not token:
            break
    assert seen[-3:] == ids


def test_validation_error_lists_every_violation(service: RunningService) -> None:
    """Blank description, priority 42, timeout -5: INVALID_ARGUMENT with three violations."""
    done = service.call("CreateTask",
                        {"description": "   ", "priority": 42, "timeout_seconds": -5})
    assert done.returncode == INVALID_ARGUMENT
    status = done.status()
    assert status["code"] == 3
    assert status["message"] == "Validation failed with 3 errors"
    assert done.detail("google.rpc.ErrorInfo")["reason"] == "VALIDATION_ERRORS"
    violations = done.detail("google.rpc.BadRequest")["field_violations"]
    assert [(v["field"], v["reason"]) for v in violations] == [
        ("description", "BLANK"), ("priority", "OUT_OF_RANGE"),
        ("timeout_seconds", "NOT_POSITIVE")]
    assert done.detail("google.rpc.RequestInfo")["request_id"]


def test_unknown_task_is_not_found_with_resource_info(service: RunningService) -> None:
    """GetTask of an unknown id: NOT_FOUND, TASK_NOT_FOUND, ResourceInfo naming the id."""
    done = service.call("GetTask", {"task_id": "no-such-task"})
    assert done.returncode == NOT_FOUND
    assert done.status()["message"] == "Task no-such-task not found"
    info = done.detail("google.rpc.ErrorInfo")
    assert info["reason"] == "TASK_NOT_FOUND"
    assert info["metadata"] == {"task_id": "no-such-task"}
    resource = done.detail("google.rpc.ResourceInfo")
    assert resource["resource_name"] == "no-such-task"
    assert resource["resource_type"] == "octollm.tasks.v1.Task"


def test_cancel_of_finished_task_is_failed_precondition(service: RunningService) -> None:
    """Cancelling twice: the second is FAILED_PRECONDITION with a PreconditionFailure."""
    task = _create(service)
    first = service.call("CancelTask", {"task_id": task["task_id"]})
    assert first.json()["task"]["status"] == "TASK_STATUS_CANCELLED"
    again = service.call("CancelTask", {"task_id": task["task_id"]})
    assert again.returncode == FAILED_PRECONDITION
    violation = again.detail("google.rpc.PreconditionFailure")["violations"][0]
    assert violation["subject"] == task["task_id"]
    assert again.detail("google.rpc.ErrorInfo")["metadata"]["status"] == "CANCELLED"


def test_execute_completes_and_batch_is_partial_success(service: RunningService) -> None:
    """ExecuteTask completes; ExecuteBatch returns a success and a NOT_FOUND status side by side."""
    task = _create(service)
    done = service.call("ExecuteTask", {"task_id": task["task_id"]})
    assert done.returncode == 0, done.stdout
    assert done.json()["task"]["status"] == "TASK_STATUS_COMPLETED"
    other = _create(service)
    batch = service.call("ExecuteBatch", {"task_ids": [other["task_id"], "missing-task"]})
    assert batch.returncode == 0, batch.stdout
    body = batch.json()
    assert (body["succeeded"], body["failed"]) == (1, 1)
    ok, failed = body["results"]
    assert ok["task"]["status"] == "TASK_STATUS_COMPLETED"
    assert failed["task_id"] == "missing-task"
    assert failed["error"]["code"] == 5
    reasons = {d["@type"].rsplit("/", 1)[1]: d for d in failed["error"]["details"]}
    assert reasons["google.rpc.ErrorInfo"]["reason"] == "TASK_NOT_FOUND"
    assert reasons["google.rpc.ResourceInfo"]["resource_name"] == "missing-task"


def _watch(service: RunningService, task_id: str) -> subprocess.Popen[str]:
    argv = [str(GRPCURL), "-plaintext", "-format-error", "-d", json.dumps({"task_id": task_id}),
            service.target, f"{SERVICE}/WatchTask"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _first_message(watch: subprocess.Popen[str]) -> dict[str, object]:
    assert watch.stdout is not None
    lines = []
    for line in watch.stdout:  # grpcurl prints each message as indented JSON ending in "}"
        lines.append(line)
        if line.rstrip("\n") == "}":
            break
    message: dict[str, object] = json.loads("".join(lines))
    return message


def test_watch_streams_changes_until_finished(service: RunningService) -> None:
    """WatchTask sends the current state, then each change, and ends when the task finishes."""
    task = _create(service)
    watch = _watch(service, str(task["task_id"]))
    first = _first_message(watch)
    assert first["task"]["status"] == "TASK_STATUS_PENDING"  # type: ignore[index]
    service.call("CancelTask", {"task_id": task["task_id"]})
    rest, _ = watch.communicate(timeout=20)
    assert watch.returncode == 0
    assert json.loads(rest)["task"]["status"] == "TASK_STATUS_CANCELLED"


def test_watch_ends_with_not_found_when_task_disappears(service: RunningService) -> None:
    """Deleting a watched task ends the stream with NOT_FOUND (TASK_NOT_FOUND details)."""
    task = _create(service)
    watch = _watch(service, str(task["task_id"]))
    _first_message(watch)
    assert service.call("DeleteTask", {"task_id": task["task_id"]}).returncode == 0
    _, error = watch.communicate(timeout=20)
    assert watch.returncode == NOT_FOUND
    status = json.loads(error)
    assert status["code"] == 5
    assert status["details"][0]["reason"] == "TASK_NOT_FOUND"


def test_health_and_metrics(service: RunningService) -> None:
    """Health says SERVING; /metrics counts handled calls by method and code."""
    health = service.grpcurl("grpc.health.v1.Health/Check", data={"service": SERVICE})
    assert health.json() == {"status": "SERVING"}
    service.call("GetTask", {"task_id": "metrics-probe"})
    assert service.metrics_url is not None
    with urllib.request.urlopen(service.metrics_url, timeout=10) as response:
        text = response.read().decode()
    assert ('grpc_server_handled_total{grpc_code="NotFound",grpc_method="GetTask",'
            'grpc_service="octollm.tasks.v1.TaskService",grpc_type="unary"}') in text
    assert 'octollm_errors_total{component="task_service",error_type="TASK_NOT_FOUND"}' in text


def test_rate_limited_call_carries_retry_delay(tmp_path: Path) -> None:
    """Over --rate-limit: RESOURCE_EXHAUSTED with RetryInfo, QuotaFailure and the limit."""
    with running_service(tmp_path, "--rate-limit", "1", "--rate-window", "60") as limited:
        first = limited.call("CreateTask", {"description": "first"})
        assert first.returncode == 0, first.stderr
        second = limited.call("CreateTask", {"description": "second"})
    assert second.returncode == RESOURCE_EXHAUSTED
    info = second.detail("google.rpc.ErrorInfo")
    assert info["reason"] == "RATE_LIMIT_EXCEEDED"
    assert info["metadata"] == {"limit": "1", "window": "60"}
    delay = second.detail("google.rpc.RetryInfo")["retry_delay"]
    assert delay.endswith("s") and 50 < float(delay[:-1]) <= 60
    assert second.detail("google.rpc.QuotaFailure")["violations"]


def test_auth_token_required_when_configured(tmp_path: Path) -> None:
    """With --auth-token: no token is UNAUTHENTICATED, the token passes, reflection stays open."""
    with running_service(tmp_path, "--auth-token", "s3cret") as guarded:
        denied = guarded.call("ListTasks", {})
        allowed = guarded.call("ListTasks", {}, headers=["authorization: Bearer s3cret"])
        listed = guarded.grpcurl("list")
    assert denied.returncode == UNAUTHENTICATED
    assert denied.detail("google.rpc.ErrorInfo")["reason"] == "AUTHENTICATION_ERROR"
    assert "s3cret" not in denied.stderr
    assert allowed.returncode == 0, allowed.stdout
    assert listed.returncode == 0 and SERVICE in listed.stdout


def test_execute_against_failing_arm(tmp_path: Path) -> None:
    """Arm failing every call: LLM_API_ERROR with the provider's details; the task is FAILED."""
    with running_service(tmp_path, "--arm-failure-rate", "1") as failing:
        task = _create(failing)
        done = failing.call("ExecuteTask", {"task_id": task["task_id"]})
        after = failing.call("GetTask", {"task_id": task["task_id"]}).json()
        logs = failing.logs()
    assert done.returncode == UNAVAILABLE
    assert done.status()["message"] == "simulated-arm API error: injected failure"
    info = done.detail("google.rpc.ErrorInfo")
    assert info["reason"] == "LLM_API_ERROR"
    assert info["metadata"]["provider"] == "simulated-arm"
    assert info["metadata"]["status_code"] == "503"
    assert after["task"]["status"] == "TASK_STATUS_FAILED"
    assert after["task"]["error"]["code"] == 14
    assert after["history"][-1]["note"] == "LLM_API_ERROR"
    # The arm was tried three times (the default --arm-attempts): three failures logged there.
    arm_failures = [json.loads(line) for line in logs.splitlines()
                    if '"grpc.call.failed"' in line and "ArmService/Complete" in line]
    assert len(arm_failures) == 3
    # ... under the request id of the task call, which the service passes on to the arm.
    request_id = done.detail("google.rpc.RequestInfo")["request_id"]
    assert {f["request_id"] for f in arm_failures} == {request_id}


@pytest.fixture(scope="module")
def slow_arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with running_service(tmp_path_factory.mktemp("slow"), "--arm-latency-ms", "5000") as running:
        yield running


def test_task_timeout_bounds_the_execution(slow_arm: RunningService) -> None:
    """A task's timeout_seconds bounds its run on a slow arm: DEADLINE_EXCEEDED, TIMEOUT_ERROR,
    marked as the caller's own budget (so no client breaker counts it against the service)."""
    task = _create(slow_arm, timeout_seconds=1)
    done = slow_arm.call("ExecuteTask", {"task_id": task["task_id"]})
    assert done.returncode == DEADLINE_EXCEEDED
    assert done.status()["message"] == "arm call timed out after 1s"
    info = done.detail("google.rpc.ErrorInfo")
    assert (info["reason"], info["metadata"]) == (
        "TIMEOUT_ERROR",
        {"operation": "arm call", "timeout": "1", "timeout_cause": "callers_budget"})
    after = slow_arm.call("GetTask", {"task_id": task["task_id"]}).json()["task"]
    assert after["status"] == "TASK_STATUS_FAILED"
    assert after["error"]["code"] == 4


def test_cancel_while_running_stops_the_execution(slow_arm: RunningService) -> None:
    """CancelTask on a RUNNING task stops the arm call: ExecuteTask ends FAILED_PRECONDITION."""
    task = _create(slow_arm)
    watch = _watch(slow_arm, str(task["task_id"]))
    assert _first_message(watch)["task"]["status"] == "TASK_STATUS_PENDING"  # type: ignore[index]
    argv = [str(GRPCURL), "-plaintext", "-format-error", "-d",
            json.dumps({"task_id": task["task_id"]}), slow_arm.target, f"{SERVICE}/ExecuteTask"]
    execute = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _first_message(watch)["task"]["status"] == "TASK_STATUS_RUNNING"  # type: ignore[index]
    started = time.monotonic()
    cancelled = slow_arm.call("CancelTask", {"task_id": task["task_id"]})
    _, error = execute.communicate(timeout=20)
    elapsed = time.monotonic() - started
    watch.communicate(timeout=20)
    assert cancelled.json()["task"]["status"] == "TASK_STATUS_CANCELLED"
    assert execute.returncode == FAILED_PRECONDITION
    assert "was cancelled while it ran" in json.loads(error)["message"]
    assert elapsed < 4  # the arm's 5 s answer was not waited for
    history = slow_arm.call("GetTask", {"task_id": task["task_id"]}).json()["history"]
    assert [h["status"] for h in history] == [
        "TASK_STATUS_PENDING", "TASK_STATUS_RUNNING", "TASK_STATUS_CANCELLED"]


def test_execute_against_down_arm_is_arm_unavailable(tmp_path: Path) -> None:
    """Arm down: ARM_UNAVAILABLE with the required capability and the cause's code."""
    with running_service(tmp_path, "--arm-down") as down:
        task = _create(down)
        done = down.call("ExecuteTask", {"task_id": task["task_id"]})
    assert done.returncode == UNAVAILABLE
    assert done.detail("google.rpc.ErrorInfo")["reason"] == "ARM_UNAVAILABLE"
    envelope = done.detail("octollm.errors.v1.ErrorEnvelope")
    assert envelope["details"] == {"required_capabilities": ["llm.complete"],
                                   "cause": "NETWORK_ERROR"}


def test_sigterm_ends_open_watch_streams_at_once(tmp_path: Path) -> None:
    """SIGTERM with a watch open: the stream ends UNAVAILABLE at once, not after the grace."""
    with running_service(tmp_path, "--grace", "30") as service:
        task = _create(service)
        watch = _watch(service, str(task["task_id"]))
        _first_message(watch)
        started = time.monotonic()
        exit_code = service.terminate(timeout=25)
        elapsed = time.monotonic() - started
        _, error = watch.communicate(timeout=20)
    assert exit_code == 0
    assert elapsed < 15  # far below the 30 s grace the watch would otherwise hold
    assert watch.returncode == UNAVAILABLE
    assert json.loads(error)["details"][0]["reason"] == "RESOURCE_ERROR"


def test_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """docs/walkthrough.md: every command, in order, on fresh databases, prints what it shows."""
    page = ROOT / "docs" / "walkthrough.md"
    done = []
    with walkthrough(ROOT, tmp_path) as reader:
        for step in steps(page):
            reader.check(step, reader.run(step))
            done.append(step.command)
    assert len(done) >= 20
    for rpc in ("CreateTask", "GetTask", "ExecuteTask", "WatchTask", "ListTasks", "DeleteTask",
                "CancelTask", "ExecuteBatch", "grpc.health.v1.Health/Check", "/metrics"):
        assert any(rpc in command for command in done), rpc
