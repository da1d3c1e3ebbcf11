"""Processes killed and restarted: the arm mid-call, the task server (SIGKILL) under load.

Real processes on loopback, real signals. For each: the caller gets a typed error within its
deadline, the breaker opens and closes again, nothing piles up (threads in the processes), and
the SQLite file holds every task a client saw acknowledged, exactly once.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc.client import BreakerSettings, CircuitState, RetryPolicy, resilient_channel
from octollm_grpc.client._breaker import ChannelBreakers
from server.gen.octollm.tasks.v1 import tasks_pb2
from tests.reliability.support import (
    Settle,
    db_rows,
    health_ok,
    launch,
    metric,
    proc_status,
    scrape,
    stop,
    task_stub,
    wait_until,
)

#: Reconnect quickly after a restart (grpc's default backoff starts at 1 s and grows).
FAST_RECONNECT = (("grpc.initial_reconnect_backoff_ms", 100),
                  ("grpc.min_reconnect_backoff_ms", 100),
                  ("grpc.max_reconnect_backoff_ms", 300))
SLACK = 1.0


def _port(target: str) -> str:
    return target.rpartition(":")[2]


def test_arm_killed_mid_call_then_restarted(tmp_path: Path) -> None:
    """Arm SIGKILLed mid-call: ARM_UNAVAILABLE in time, breaker opens; arm back: task completes."""
    arm = launch(tmp_path, "--port", "0", "--latency-ms", "1500", module="server.arm",
                 wants=("arm",))
    arm_port = _port(arm.arm_target)
    reset = 0.5
    running = launch(tmp_path, "--arm-target", arm.arm_target, "--arm-attempts", "2",
                     "--arm-breaker-failures", "2", "--arm-breaker-reset", str(reset))
    restarted = None
    try:
        with resilient_channel(running.target, retry=None, breaker=None, budget=None,
                               registry=CollectorRegistry()) as channel:
            stub = task_stub(channel)
            task = stub.CreateTask(tasks_pb2.CreateTaskRequest(description="killed arm",
                                                               request_id="arm-kill-1"),
                                   timeout=5).task
            execute = tasks_pb2.ExecuteTaskRequest(task_id=task.task_id)
            threads_before = proc_status(running.process.pid)["Threads"]
            with ThreadPoolExecutor(max_workers=1) as pool:
                start = time.monotonic()
                in_flight = pool.submit(stub.ExecuteTask, execute, timeout=10)
                assert wait_until(lambda: db_rows(
                    running.db, "SELECT status FROM tasks WHERE task_id = ?",
                    task.task_id) == [("RUNNING",)], 5)
                time.sleep(0.2)  # the arm holds the call (1.5 s latency): kill it now
                stop(arm, kill=True)
                try:
                    in_flight.result(timeout=15)
                    raise AssertionError("the execution survived its arm")
                except errors.OctoLLMError as error:
                    killed, killed_in = error, time.monotonic() - start
            start = time.monotonic()
            try:
                stub.ExecuteTask(execute, timeout=10)
                raise AssertionError("the breaker did not open")
            except errors.OctoLLMError as error:
                open_error, open_in = error, time.monotonic() - start
            failed_row = db_rows(running.db, "SELECT status FROM tasks WHERE task_id = ?",
                                 task.task_id)
            open_state = metric(scrape(str(running.metrics_url)), "octollm_client_circuit_state")

            restarted = launch(tmp_path, "--port", arm_port, module="server.arm", wants=("arm",))
            done: list[Any] = []

            def completes() -> bool:
                try:
                    done.append(stub.ExecuteTask(execute, timeout=10).task)
                except errors.OctoLLMError:
                    time.sleep(0.1)
                    return False
                return True

            assert wait_until(completes, 20), "the task never completed after the arm came back"
            samples = scrape(str(running.metrics_url))
            threads_after = proc_status(running.process.pid)["Threads"]
            assert health_ok(running.target)
    finally:
        stop(running)
        stop(arm, kill=True)
        if restarted is not None:
            stop(restarted)

    assert isinstance(killed, errors.ArmUnavailableError), killed
    assert killed.details["cause"] == "NETWORK_ERROR"
    assert killed.code() is grpc.StatusCode.UNAVAILABLE
    assert killed_in < 10 + SLACK
    assert failed_row == [("FAILED",)]
    # The service's breaker is open: a remote CIRCUIT_OPEN, told apart from our own breaker's.
    assert isinstance(open_error, errors.ResourceError), open_error
    assert not isinstance(open_error, errors.CircuitOpenError)
    assert open_error.error_code == "CIRCUIT_OPEN"
    assert open_error.retry_after is not None and 0 < open_error.retry_after <= reset
    assert open_in < 0.5  # refused by the service's breaker, not by another dead arm
    assert open_state == 2  # OPEN on the service's /metrics
    assert done[-1].status == tasks_pb2.TASK_STATUS_COMPLETED
    assert metric(samples, "octollm_client_circuit_state") == 0  # CLOSED again
    assert metric(samples, "octollm_client_circuit_transitions_total", to_state="open") >= 1
    assert metric(samples, "octollm_client_circuit_transitions_total", to_state="closed") >= 1
    rows = db_rows(running.db, "SELECT task_id, status FROM tasks")
    history = [s for (s,) in db_rows(running.db, "SELECT status FROM task_history WHERE "
                                     "task_id = ? ORDER BY id", task.task_id)]
    assert rows == [(task.task_id, "COMPLETED")]  # one task, never a second
    assert history[:3] == ["PENDING", "RUNNING", "FAILED"] and history[-1] == "COMPLETED"
    assert threads_after <= threads_before + 2


def test_task_server_sigkilled_and_restarted_under_load(tmp_path: Path) -> None:
    """SIGKILL under 4 writers: typed errors in time, breaker cycles, every ack stored once."""
    first = launch(tmp_path)
    port = _port(first.target)
    target = first.target
    changes: list[tuple[CircuitState, CircuitState]] = []
    breakers = ChannelBreakers(
        target, BreakerSettings(failure_threshold=3, reset_timeout=0.2),
        registry=CollectorRegistry(),
        listeners=[lambda _, old, new: changes.append((old, new))])
    acked: dict[str, str] = {}  # request_id -> task_id
    failed: dict[str, tuple[type, float]] = {}  # request_id -> (error class, seconds taken)
    lock = threading.Lock()
    stop_writing = threading.Event()
    deadline = 2.0

    def writer(stub: Any) -> None:
        for _ in range(5000):  # bounded; normally ended by stop_writing
            if stop_writing.is_set():
                return
            request_id = uuid.uuid4().hex
            start = time.monotonic()
            try:
                task = stub.CreateTask(tasks_pb2.CreateTaskRequest(
                    description="under fire", request_id=request_id), timeout=deadline).task
            except errors.OctoLLMError as error:
                with lock:
                    failed[request_id] = (type(error), time.monotonic() - start)
                time.sleep(0.01)
                continue
            with lock:
                acked[request_id] = task.task_id

    def acks() -> int:
        with lock:
            return len(acked)

    second = None
    settle = Settle()
    try:
        with resilient_channel(target, breaker=breakers, budget=None,
                               retry=RetryPolicy(max_attempts=3, initial_backoff=0.02,
                                                 max_backoff=0.1),
                               options=FAST_RECONNECT, registry=CollectorRegistry()) as channel:
            stub = task_stub(channel)
            with ThreadPoolExecutor(max_workers=4) as pool:
                writers = [pool.submit(writer, stub) for _ in range(4)]
                assert wait_until(lambda: acks() >= 30, 15)
                stop(first, kill=True)
                killed_at = acks()
                assert wait_until(lambda: len(failed) >= 8, 10)
                second = launch(tmp_path, "--port", port, db=first.db)
                assert wait_until(lambda: acks() >= killed_at + 30, 20), "no recovery"
                stop_writing.set()
                for future in writers:
                    future.result(timeout=30)
            # The client retries what failed with the same idempotency keys: never a 2nd task.
            replayed = {rid: stub.CreateTask(tasks_pb2.CreateTaskRequest(
                description="under fire", request_id=rid), timeout=5).task.task_id
                for rid in failed}
            assert health_ok(target)
        stored = db_rows(second.db, "SELECT request_id, task_id FROM tasks")
        leaked = settle.leaked_threads()
    finally:
        stop(first, kill=True)
        if second is not None:
            stop(second)

    print(f"sigkill: {len(acked)} creates acknowledged, {len(failed)} failed in the outage "
          f"({sorted(c.__name__ for c in {cls for cls, _ in failed.values()})}), "
          f"{len(stored)} rows, breaker {[(a.name, b.name) for a, b in changes]}")
    kinds = {cls for cls, _ in failed.values()}
    assert kinds <= {errors.NetworkError, errors.CircuitOpenError, errors.TimeoutError}, kinds
    assert errors.CircuitOpenError in kinds
    assert max(took for _, took in failed.values()) <= deadline + SLACK
    assert (CircuitState.CLOSED, CircuitState.OPEN) in changes
    assert changes[-1] == (CircuitState.HALF_OPEN, CircuitState.CLOSED)
    by_request = {}
    for request_id, task_id in stored:
        assert request_id not in by_request, f"two tasks for {request_id}"
        by_request[request_id] = task_id
    assert len({t for _, t in stored}) == len(stored)
    for request_id, task_id in acked.items():
        assert by_request.get(request_id) == task_id  # every ack is in the database, once
    for request_id, task_id in replayed.items():
        assert by_request[request_id] == task_id
    assert set(by_request) == set(acked) | set(replayed)
    assert leaked == []
