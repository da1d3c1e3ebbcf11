"""The sample's arm fallback: ``--arm-target primary,fallback`` with real arm processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from octollm_grpc import errors
from octollm_grpc.client import RetryPolicy, resilient_channel
from server.config import parse_args
from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.reliability.support import launch, service, stop


def _events(log: str, event: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def test_first_arm_down_the_next_one_serves_and_history_says_which(tmp_path: Path) -> None:
    """Primary arm process gone: ExecuteTask completes on the fallback arm, and once the
    primary's breaker is open it is skipped without a call; history names the serving arm."""
    primary = launch(tmp_path, "--port", "0", "--arm-id", "arm-primary",
                     module="server.arm", wants=("arm",))
    stop(primary)  # its port now refuses connections: the primary is down
    with service(tmp_path, "--port", "0", "--arm-id", "arm-fallback",
                 module="server.arm", wants=("arm",)) as fallback, \
         service(tmp_path, "--arm-target", f"{primary.arm_target},{fallback.arm_target}",
                 "--arm-attempts", "1", "--arm-breaker-failures", "1",
                 "--arm-breaker-reset", "300") as tasks:
        assert tasks.arm_target == f"{primary.arm_target},{fallback.arm_target}"
        # The task client itself must not retry: one ExecuteTask is one fallback walk.
        with resilient_channel(tasks.target, retry=RetryPolicy(max_attempts=1)) as channel:
            stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
            served = []
            for description in ("first", "second"):
                task = stub.CreateTask(tasks_pb2.CreateTaskRequest(description=description),
                                       timeout=10).task
                done = stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=task.task_id),
                                        timeout=20).task
                history = stub.GetTask(tasks_pb2.GetTaskRequest(task_id=task.task_id),
                                       timeout=10).history
                served.append((done.status, [entry.note for entry in history]))
        log = tasks.logs()
    completed = tasks_pb2.TaskStatus.Value("TASK_STATUS_COMPLETED")
    for status, notes in served:
        assert status == completed
        assert "completed by arm-fallback" in notes
    fallbacks = _events(log, "resilience.fallback.trying_next")
    assert [(e["function"], e["fallback"], e["error_type"]) for e in fallbacks] == [
        ("arm 1 of 2", "arm 2 of 2", "ARM_UNAVAILABLE"),  # the refused connection
        ("arm 1 of 2", "arm 2 of 2", "CIRCUIT_OPEN"),  # then its open breaker: not called
    ]
    assert all(e["level"] == "warning" for e in fallbacks)


def test_all_arms_down_reports_the_last_arms_error(tmp_path: Path) -> None:
    """Both arms gone: ARM_UNAVAILABLE reaches the task client, after trying both."""
    arms = [launch(tmp_path, "--port", "0", module="server.arm", wants=("arm",))
            for _ in range(2)]
    for arm in arms:
        stop(arm)
    with service(tmp_path, "--arm-target", ",".join(a.arm_target for a in arms),
                 "--arm-attempts", "1") as tasks:
        with resilient_channel(tasks.target, retry=RetryPolicy(max_attempts=1)) as channel:
            stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
            task = stub.CreateTask(tasks_pb2.CreateTaskRequest(description="x"), timeout=10).task
            with pytest.raises(errors.ArmUnavailableError):
                stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=task.task_id), timeout=20)
        log = tasks.logs()
    assert len(_events(log, "resilience.fallback.trying_next")) == 1
    assert len(_events(log, "resilience.fallback.exhausted")) == 1


def test_arm_target_list_is_validated() -> None:
    """Blank entries and duplicates are usage errors; spaces around entries are dropped."""
    settings = parse_args(["--arm-target", "127.0.0.1:1, 127.0.0.1:2"], env={})
    assert settings.arm_targets == ("127.0.0.1:1", "127.0.0.1:2")
    assert settings.arm_target == "127.0.0.1:1,127.0.0.1:2"
    for bad in ("127.0.0.1:1,,127.0.0.1:2", "127.0.0.1:1,127.0.0.1:1"):
        with pytest.raises(SystemExit):
            parse_args(["--arm-target", bad], env={})
