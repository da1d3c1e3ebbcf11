"""A Python client on a resilient channel against ``python -m server`` in a subprocess.

Idempotent creates, the arm's circuit breaker opening and closing end to end, and a graceful
SIGTERM that loses no acknowledged write.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from octollm_grpc import errors
from octollm_grpc.client import resilient_channel
from octollm_grpc.client.aio import resilient_channel as aio_resilient_channel
from server.arm import ArmFaults, SimulatedArm, start_arm
from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.service.harness import running_service


def _stub(channel: grpc.Channel) -> tasks_pb2_grpc.TaskServiceStub:
    return tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]


def _rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql, args))


def test_retried_create_with_same_request_id_leaves_one_task(tmp_path: Path) -> None:
    """Repeated and concurrent creates with one request_id return one task; one row exists."""
    with running_service(tmp_path) as service:
        with resilient_channel(service.target) as channel:
            stub = _stub(channel)
            request = tasks_pb2.CreateTaskRequest(description="idempotent", request_id="idem-1")
            first = stub.CreateTask(request, timeout=10).task
            with ThreadPoolExecutor(max_workers=8) as pool:
                again = list(pool.map(lambda _: stub.CreateTask(request, timeout=10).task,
                                      range(16)))
            listed = stub.ListTasks(tasks_pb2.ListTasksRequest(page_size=1000), timeout=10)
        rows = _rows(service.db, "SELECT task_id FROM tasks WHERE request_id = ?", "idem-1")
        history = _rows(service.db, "SELECT status FROM task_history WHERE task_id = ?",
                        first.task_id)
    assert {t.task_id for t in again} == {first.task_id}
    assert [t.task_id for t in listed.tasks if t.request_id == "idem-1"] == [first.task_id]
    assert rows == [(first.task_id,)]
    assert history == [("PENDING",)]


def test_typed_errors_reach_the_python_client(tmp_path: Path) -> None:
    """The resilient channel raises the server's typed errors, still usable as grpc.RpcError."""
    with running_service(tmp_path) as service, resilient_channel(service.target) as channel:
        stub = _stub(channel)
        with pytest.raises(errors.TaskNotFoundError) as missing:
            stub.GetTask(tasks_pb2.GetTaskRequest(task_id="nope"), timeout=10)
        with pytest.raises(errors.ValidationErrors) as invalid:
            stub.CreateTask(tasks_pb2.CreateTaskRequest(description="", priority=11),
                            timeout=10)
    assert missing.value.details["task_id"] == "nope"
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    assert missing.value.details() == "Task nope not found"
    assert [e["field"] for e in invalid.value.errors] == ["description", "priority"]


async def test_breaker_opens_while_arm_is_down_and_closes_after_it_returns(
        tmp_path: Path) -> None:
    """Arm down: ARM_UNAVAILABLE until the breaker opens (CIRCUIT_OPEN); arm back: calls succeed."""
    arm = SimulatedArm(ArmFaults(down=True))
    arm_server, arm_port = await start_arm(arm, "127.0.0.1", 0)
    reset = 0.5
    try:
        with running_service(tmp_path, "--arm-target", f"127.0.0.1:{arm_port}",
                             "--arm-attempts", "1", "--arm-breaker-failures", "2",
                             "--arm-breaker-reset", str(reset)) as service:
            # No retries on our side: each ExecuteTask is exactly one attempt on the arm.
            async with aio_resilient_channel(service.target, retry=None,
                                             breaker=None) as channel:
                stub = _stub(channel)
                created = await stub.CreateTask(
                    tasks_pb2.CreateTaskRequest(description="probe the arm"), timeout=10)
                execute = tasks_pb2.ExecuteTaskRequest(task_id=created.task.task_id)
                outcomes: list[BaseException] = []
                for _ in range(3):
                    try:
                        await stub.ExecuteTask(execute, timeout=10)
                    except errors.OctoLLMError as error:
                        outcomes.append(error)
                calls_while_open = arm.calls

                arm.faults = ArmFaults()  # the arm is back
                await asyncio.sleep(reset)  # the breaker's reset timeout (real: a subprocess)
                done = await stub.ExecuteTask(execute, timeout=10)
    finally:
        await arm_server.stop(None)

    unavailable, unavailable_again, circuit_open = outcomes
    assert isinstance(unavailable, errors.ArmUnavailableError)
    assert unavailable.details["cause"] == "NETWORK_ERROR"
    assert isinstance(unavailable_again, errors.ArmUnavailableError)
    # The service's breaker, seen from its client: a peer's CIRCUIT_OPEN, not ours.
    assert type(circuit_open) is errors.ResourceError
    assert circuit_open.error_code == "CIRCUIT_OPEN"
    assert circuit_open.code() is grpc.StatusCode.UNAVAILABLE
    assert circuit_open.retry_after is not None and 0 < circuit_open.retry_after <= reset
    assert circuit_open.details["target"] == "arm (llm.complete)"  # not the arm's address
    assert calls_while_open == 2  # the third call never reached the arm
    assert done.task.status == tasks_pb2.TASK_STATUS_COMPLETED
    assert arm.calls == 3


def test_sigterm_during_writes_loses_no_acknowledged_create(tmp_path: Path) -> None:
    """SIGTERM mid-stream: the in-flight execute finishes, every acknowledged create is stored."""
    acked: list[str] = []
    lock = threading.Lock()
    stop_writing = threading.Event()

    with running_service(tmp_path, "--arm-latency-ms", "1000", "--grace", "5") as service:
        with resilient_channel(service.target) as channel:
            stub = _stub(channel)
            slow = stub.CreateTask(tasks_pb2.CreateTaskRequest(description="slow one"),
                                   timeout=10).task

            def writer() -> None:
                for _ in range(10_000):  # bounded; ends at the first refused call
                    if stop_writing.is_set():
                        return
                    request = tasks_pb2.CreateTaskRequest(
                        description="write", request_id=uuid.uuid4().hex)
                    try:
                        task = stub.CreateTask(request, timeout=5).task
                    except grpc.RpcError:
                        return
                    with lock:
                        acked.append(task.task_id)

            with ThreadPoolExecutor(max_workers=5) as pool:
                in_flight = pool.submit(stub.ExecuteTask,
                                        tasks_pb2.ExecuteTaskRequest(task_id=slow.task_id),
                                        timeout=10)
                writers = [pool.submit(writer) for _ in range(4)]
                deadline = time.monotonic() + 10
                while len(acked) < 20 and time.monotonic() < deadline:
                    time.sleep(0.01)
                sent_while_executing = not in_flight.done()
                service.process.send_signal(signal.SIGTERM)
                executed = in_flight.result(timeout=15)
                exit_code = service.process.wait(15)
                stop_writing.set()
                for future in writers:
                    future.result(timeout=30)

        stored = {row[0] for row in _rows(service.db, "SELECT task_id FROM tasks")}
        slow_status = _rows(service.db, "SELECT status FROM tasks WHERE task_id = ?",
                            slow.task_id)
        logs = service.logs()
    assert exit_code == 0, logs
    assert sent_while_executing
    assert len(acked) >= 20
    assert set(acked) <= stored
    assert executed.task.status == tasks_pb2.TASK_STATUS_COMPLETED
    assert slow_status == [("COMPLETED",)]


def test_unreachable_arm_is_arm_unavailable(tmp_path: Path) -> None:
    """No arm listening at --arm-target: connection refused surfaces as ARM_UNAVAILABLE."""
    with socket.socket() as probe:  # a port that was free a moment ago, now closed again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with running_service(tmp_path, "--arm-target", f"127.0.0.1:{port}",
                         "--arm-attempts", "2") as service:
        with resilient_channel(service.target, retry=None) as channel:
            stub = _stub(channel)
            task = stub.CreateTask(tasks_pb2.CreateTaskRequest(description="nowhere"),
                                   timeout=10).task
            with pytest.raises(errors.ArmUnavailableError) as raised:
                stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=task.task_id), timeout=10)
            after = stub.GetTask(tasks_pb2.GetTaskRequest(task_id=task.task_id), timeout=10)
    assert raised.value.details == {"required_capabilities": ["llm.complete"],
                                    "cause": "NETWORK_ERROR"}
    assert f"{port}" not in raised.value.message
    assert after.task.status == tasks_pb2.TASK_STATUS_FAILED
    assert after.history[-1].note == "ARM_UNAVAILABLE"


async def test_failing_arm_is_one_server_attempt_through_a_default_resilient_channel(
        tmp_path: Path) -> None:
    """The service retried its arm: it says "do not retry" (A6), so callers make one attempt."""
    # A breaker threshold above the 6 arm attempts below keeps every attempt on the arm.
    with running_service(tmp_path, "--arm-failure-rate", "1",
                         "--arm-breaker-failures", "10") as service:
        with resilient_channel(service.target) as channel:  # defaults: 3 attempts
            stub = _stub(channel)
            task = stub.CreateTask(tasks_pb2.CreateTaskRequest(description="sync"),
                                   timeout=10).task
            with pytest.raises(errors.LLMAPIError) as sync_raised:
                stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=task.task_id),
                                 timeout=20)
        async with aio_resilient_channel(service.target) as aio_channel:
            aio_stub = _stub(aio_channel)
            created = await aio_stub.CreateTask(
                tasks_pb2.CreateTaskRequest(description="aio"), timeout=10)
            with pytest.raises(errors.LLMAPIError) as aio_raised:
                await aio_stub.ExecuteTask(
                    tasks_pb2.ExecuteTaskRequest(task_id=created.task.task_id), timeout=20)
        logs = service.logs()
    failed = [json.loads(line) for line in logs.splitlines() if '"grpc.call.failed"' in line]
    server_attempts = [f for f in failed if "TaskService/ExecuteTask" in json.dumps(f)]
    arm_calls = [f for f in failed if "ArmService/Complete" in json.dumps(f)]
    assert len(server_attempts) == 2  # one per ExecuteTask, on each stack
    assert {a["error_code"] for a in server_attempts} == {"LLM_API_ERROR"}
    # Each server attempt made the service's own attempts on the arm (at most --arm-attempts
    # 3; its retry budget may allow fewer), under that attempt's request id.
    per_call = {a["request_id"]: sum(c["request_id"] == a["request_id"] for c in arm_calls)
                for a in server_attempts}
    assert sum(per_call.values()) == len(arm_calls)
    assert per_call[server_attempts[0]["request_id"]] == 3
    assert all(1 <= n <= 3 for n in per_call.values()), per_call
    for raised in (sync_raised, aio_raised):
        assert ("grpc-retry-pushback-ms", "-1") in tuple(raised.value.trailing_metadata())
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        assert raised.value.details["provider"] == "simulated-arm"


def test_arm_without_retries_leaves_caller_retries_alone(tmp_path: Path) -> None:
    """--arm-attempts 1: the service did not retry, so it sends no "do not retry"."""
    with running_service(tmp_path, "--arm-failure-rate", "1", "--arm-attempts", "1") as service:
        with resilient_channel(service.target) as channel:
            stub = _stub(channel)
            task = stub.CreateTask(tasks_pb2.CreateTaskRequest(description="once"),
                                   timeout=10).task
            with pytest.raises(errors.LLMAPIError) as raised:
                stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=task.task_id),
                                 timeout=20)
    keys = [key for key, _ in raised.value.trailing_metadata()]
    assert "grpc-retry-pushback-ms" not in keys
