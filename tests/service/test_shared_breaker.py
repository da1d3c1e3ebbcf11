"""One caller must not open the shared arm breaker: its own short deadline is not a failure.

Against the real service (real ports, a real SQLite file, the real arm in the process): five
tasks created with ``timeout_seconds=1`` against a 1.5 s arm each end ``DEADLINE_EXCEEDED``:
that is each task's own time running out, not the arm failing. The arm breaker (5 failures
open it) stays closed, and another caller's ExecuteTask still reaches the arm and completes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.service.harness import running_service


def test_tasks_own_timeouts_do_not_open_the_arm_breaker(tmp_path: Path) -> None:
    """Five 1 s tasks time out on a 1.5 s arm; the next caller's task still completes."""
    with running_service(tmp_path, "--arm-latency-ms", "1500", "--arm-breaker-failures", "5",
                         "--arm-breaker-reset", "30") as service:
        with grpc.insecure_channel(service.target) as channel:
            stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
            short = [stub.CreateTask(tasks_pb2.CreateTaskRequest(
                description=f"short {i}", timeout_seconds=1), timeout=10).task
                for i in range(5)]

            def execute(task_id: str) -> grpc.StatusCode:
                try:
                    stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=task_id), timeout=10)
                except grpc.RpcError as error:
                    return error.code()  # type: ignore[no-any-return, attr-defined]
                return grpc.StatusCode.OK

            with ThreadPoolExecutor(max_workers=5) as pool:
                codes = list(pool.map(execute, [task.task_id for task in short]))
            other = stub.CreateTask(tasks_pb2.CreateTaskRequest(
                description="another caller's task", timeout_seconds=5), timeout=10).task
            done = stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=other.task_id),
                                    timeout=10)
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 5
    assert done.task.status == tasks_pb2.TASK_STATUS_COMPLETED


def test_hanging_arm_still_opens_the_breaker_for_tasks_without_their_own_timeout(
    tmp_path: Path,
) -> None:
    """Tasks without timeout_seconds: each attempt cut by --arm-timeout (the arm channel's
    per-attempt timeout) is the arm's failure, so a hanging arm opens the breaker, and the
    next execution fails fast with CIRCUIT_OPEN instead of waiting on the arm again."""
    with running_service(tmp_path, "--arm-latency-ms", "5000", "--arm-timeout", "0.3",
                         "--arm-attempts", "1", "--arm-breaker-failures", "2",
                         "--arm-breaker-reset", "30") as service:
        with grpc.insecure_channel(service.target) as channel:
            stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
            outcomes = []
            for i in range(3):
                task = stub.CreateTask(tasks_pb2.CreateTaskRequest(
                    description=f"no own timeout {i}"), timeout=10).task
                try:
                    stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=task.task_id),
                                     timeout=10)
                except grpc.RpcError as error:
                    reason = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
                    outcomes.append((error.code(), error.details(),  # type: ignore[attr-defined]
                                     "grpc-status-details-bin" in reason))
    assert [code for code, _, _ in outcomes] == [
        grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE]
    assert outcomes[0][1] == "arm call timed out after 0.3s"
    assert "Circuit breaker" in outcomes[2][1] and "arm (llm.complete)" in outcomes[2][1]
