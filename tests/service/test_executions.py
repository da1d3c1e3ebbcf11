"""Every execution ends committed in a final state, whatever stops its handler.

The real service runs in a subprocess with a real SQLite file; callers' deadlines expire while
the service's RUNNING and COMPLETED writes are queued behind a ListTasks load, callers go
away, CancelTask and DeleteTask stop running tasks, and SIGTERM arrives mid-execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.service.harness import RunningService, running_service


def _stub(channel: grpc.aio.Channel) -> tasks_pb2_grpc.TaskServiceStub:
    return tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]


def _rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql, args))


async def _settled(db: Path, task_ids: list[str], timeout: float = 10.0) -> dict[str, str]:
    """The tasks' stored statuses once none is RUNNING (or as they are after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        marks = ",".join("?" * len(task_ids))
        statuses = {str(t): str(s) for t, s in _rows(
            db, f"SELECT task_id, status FROM tasks WHERE task_id IN ({marks})", *task_ids)}
        if "RUNNING" not in statuses.values() or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.05)  # polling another process's database, bounded by `timeout`


_ARM = 'grpc_method="Complete",grpc_service="octollm.arms.v1.ArmService",grpc_type="unary"'
ARM_STARTED = f"grpc_server_started_total{{{_ARM}}} 1.0"
ARM_CANCELLED = f'grpc_server_handled_total{{grpc_code="Canceled",{_ARM}}} 1.0'


async def _arm_metric(service: RunningService, wanted: str, timeout: float = 10.0) -> bool:
    """Whether the built-in arm's metrics (they share /metrics) show ``wanted``.

    The arm learns of a call, and of its cancellation, from the network, after the service
    has moved on: this polls, bounded by ``timeout``.
    """
    assert service.metrics_url is not None
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(service.metrics_url, timeout=10) as response:
            if wanted in response.read().decode():
                return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


def _notes(db: Path, task_id: str) -> list[str]:
    return [str(n) for (n,) in _rows(
        db, "SELECT note FROM task_history WHERE task_id = ? ORDER BY id", task_id)]


async def _create(stub: tasks_pb2_grpc.TaskServiceStub, count: int,
                  description: str = "execute me") -> list[str]:
    created = await asyncio.gather(*(
        stub.CreateTask(tasks_pb2.CreateTaskRequest(description=description), timeout=20)
        for _ in range(count)))
    return [c.task.task_id for c in created]


async def test_deadlines_expiring_during_writes_leave_no_task_running(tmp_path: Path) -> None:
    """100 executes whose deadlines expire around the writes, under ListTasks load: none RUNNING."""
    with running_service(tmp_path, "--arm-latency-ms", "60", "--rate-limit", "0") as service:
        async with grpc.aio.insecure_channel(service.target) as channel:
            stub = _stub(channel)
            # Large descriptions make each ListTasks page a long read on the storage thread.
            ids = await _create(stub, 100, "x" * 5000)
            stop_listing = asyncio.Event()

            async def list_load() -> None:
                for _ in range(2000):  # bounded; ends when the executes are done
                    if stop_listing.is_set():
                        return
                    await stub.ListTasks(tasks_pb2.ListTasksRequest(page_size=100), timeout=20)

            async def execute(index: int, task_id: str) -> None:
                # Deadlines from 20 to 416 ms: before, around and after the arm's 60 ms answer.
                # Either outcome is fine: the test checks what is stored, not the reply.
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=task_id),
                                           timeout=0.02 + (index % 100) * 0.004)

            loaders = [asyncio.ensure_future(list_load()) for _ in range(4)]
            await asyncio.gather(*(execute(i, t) for i, t in enumerate(ids)))
            stop_listing.set()
            await asyncio.gather(*loaders)
            statuses = await _settled(service.db, ids)
            # A FAILED task can run again and complete: nothing is wedged.
            failed = [t for t, s in statuses.items() if s == "FAILED"]
            again = None
            if failed:
                again = await stub.ExecuteTask(
                    tasks_pb2.ExecuteTaskRequest(task_id=failed[0]), timeout=20)
        logs = service.logs()
    counts = {s: list(statuses.values()).count(s) for s in set(statuses.values())}
    stuck = [t for t, s in statuses.items() if s == "RUNNING"]
    assert stuck == [], f"{len(stuck)} tasks left RUNNING: {counts}"
    # PENDING: the deadline passed before the execution began (nothing was started).
    assert set(statuses.values()) <= {"PENDING", "COMPLETED", "FAILED"}
    for task_id, status in statuses.items():
        if status == "FAILED" and task_id != failed[0]:
            assert _notes(service.db, task_id)[-1] in (
                "the caller went away", "TIMEOUT_ERROR"), _notes(service.db, task_id)
    if again is not None:
        assert again.task.status == tasks_pb2.TASK_STATUS_COMPLETED
    assert '"level": "critical"' not in logs and '"level":"critical"' not in logs



@pytest.mark.parametrize("batch", [False, True], ids=["ExecuteTask", "ExecuteBatch"])
async def test_sigterm_shorter_than_the_work_fails_in_flight_tasks(tmp_path: Path,
                                                                   batch: bool) -> None:
    """--grace 1, 3 s arm calls, SIGTERM: every in-flight task FAILED "server shutting down"."""
    with running_service(tmp_path, "--arm-latency-ms", "3000", "--grace", "1",
                         "--rate-limit", "0") as service:
        async with grpc.aio.insecure_channel(service.target) as channel:
            stub = _stub(channel)
            ids = await _create(stub, 8 if batch else 20)  # a batch runs 8 items at once
            if batch:
                calls = [asyncio.ensure_future(stub.ExecuteBatch(
                    tasks_pb2.ExecuteBatchRequest(task_ids=ids), timeout=30))]
            else:
                calls = [asyncio.ensure_future(stub.ExecuteTask(
                    tasks_pb2.ExecuteTaskRequest(task_id=t), timeout=30)) for t in ids]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # bounded: until all 20 are RUNNING
                marks = ",".join("?" * len(ids))
                running = _rows(service.db, "SELECT count(*) FROM tasks WHERE status = "
                                f"'RUNNING' AND task_id IN ({marks})", *ids)[0][0]
                if running == len(ids):
                    break
                await asyncio.sleep(0.05)
            started = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            exit_code = await asyncio.to_thread(service.process.wait, 20)
            elapsed = time.monotonic() - started
        logs = service.logs()
    assert running == len(ids)
    assert exit_code == 0, logs
    assert elapsed < 3  # the grace, not the 3 s arm calls
    assert all(isinstance(o, grpc.aio.AioRpcError) for o in outcomes), outcomes
    statuses = await _settled(service.db, ids, timeout=0)
    assert set(statuses.values()) == {"FAILED"}, statuses
    assert {_notes(service.db, t)[-1] for t in ids} == {"server shutting down"}
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert [e for e in events if e.get("level") == "critical"] == []
    assert sum(e.get("event") == "task.execution.stopped" for e in events) == len(ids)


async def test_delete_of_running_task_stops_its_arm_call(tmp_path: Path) -> None:
    """DeleteTask of a RUNNING task cancels its 5 s arm call: ExecuteTask ends NOT_FOUND at once."""
    with running_service(tmp_path, "--arm-latency-ms", "5000") as service:
        async with grpc.aio.insecure_channel(service.target) as channel:
            stub = _stub(channel)
            (task_id,) = await _create(stub, 1)
            execute = asyncio.ensure_future(stub.ExecuteTask(
                tasks_pb2.ExecuteTaskRequest(task_id=task_id), timeout=20))
            watch = stub.WatchTask(tasks_pb2.WatchTaskRequest(task_id=task_id), timeout=20)
            async for change in watch:  # bounded by the watch's deadline
                if change.task.status == tasks_pb2.TASK_STATUS_RUNNING:
                    break
            watch.cancel()
            assert await _arm_metric(service, ARM_STARTED)  # the arm call is under way
            started = time.monotonic()
            await stub.DeleteTask(tasks_pb2.DeleteTaskRequest(task_id=task_id), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await execute
            elapsed = time.monotonic() - started
        arm_cancelled = await _arm_metric(service, ARM_CANCELLED)
        logs = service.logs()
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert elapsed < 2.5  # not the arm's 5 s
    assert _rows(service.db, "SELECT count(*) FROM tasks WHERE task_id = ?", task_id) == [(0,)]
    assert arm_cancelled
    deleted = [json.loads(line) for line in logs.splitlines() if '"task.deleted"' in line]
    assert [e["was_running"] for e in deleted] == [True]


async def test_caller_cancelling_fails_the_task_and_stops_the_arm_call(tmp_path: Path) -> None:
    """A caller cancels its ExecuteTask mid-run: the task is FAILED "the caller went away"."""
    with running_service(tmp_path, "--arm-latency-ms", "5000") as service:
        async with grpc.aio.insecure_channel(service.target) as channel:
            stub = _stub(channel)
            (task_id,) = await _create(stub, 1)
            call = stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=task_id), timeout=20)
            watch = stub.WatchTask(tasks_pb2.WatchTaskRequest(task_id=task_id), timeout=20)
            statuses = []
            async for change in watch:  # bounded by the watch's deadline; ends when finished
                statuses.append(change.task.status)
                if change.task.status == tasks_pb2.TASK_STATUS_RUNNING:
                    assert await _arm_metric(service, ARM_STARTED)  # the arm call is under way
                    call.cancel()
        arm_cancelled = await _arm_metric(service, ARM_CANCELLED)
    # The watch may begin at PENDING or already at RUNNING; it ends at FAILED.
    assert statuses[-2:] == [tasks_pb2.TASK_STATUS_RUNNING, tasks_pb2.TASK_STATUS_FAILED]
    assert _notes(service.db, task_id)[-1] == "the caller went away"
    assert arm_cancelled
