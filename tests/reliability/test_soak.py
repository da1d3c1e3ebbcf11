"""A bounded soak: a steady rate for SOAK_SECONDS with 10% injected errors, then the books.

The service's built-in arm fails 10% of completions (seeded), with one attempt per arm call and
a breaker that never trips, so every injected failure reaches the wire. One paced client runs
CreateTask + ExecuteTask pairs. Afterwards: the error rate on the wire is the injected rate,
the service's RSS and thread count are flat, the client has no extra threads, and the metrics
(scraped from /metrics) and the database add up to exactly the calls made.
(The issue's 60 s soak is scaled down to fit CI on two busy cores.)
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc.client import resilient_channel
from server.gen.octollm.tasks.v1 import tasks_pb2
from tests.reliability.support import (
    Settle,
    db_rows,
    health_ok,
    metric,
    proc_status,
    scrape,
    service,
    task_stub,
)

SOAK_SECONDS = 8.0
RATE = 25.0  # create + execute pairs per second (50 RPCs/s)
FAILURE_RATE = 0.1
WARM_UP = 20
RSS_GROWTH_KB = 8 * 1024

TASKS = "octollm.tasks.v1.TaskService"
ARM = "octollm.arms.v1.ArmService"


def test_soak_at_steady_rate_with_injected_errors(tmp_path: Path) -> None:
    """Wire error rate = injected rate, RSS and threads flat, metrics and rows add up."""
    with service(tmp_path, "--arm-failure-rate", str(FAILURE_RATE), "--arm-seed", "7",
                 "--arm-attempts", "1", "--arm-breaker-failures", "1000",
                 "--log-level", "warning") as running, \
            resilient_channel(running.target, retry=None, breaker=None, budget=None,
                              registry=CollectorRegistry()) as channel:
        stub = task_stub(channel)
        ok = failed = 0
        wrong: list[BaseException] = []

        def pair() -> None:
            nonlocal ok, failed
            task = stub.CreateTask(tasks_pb2.CreateTaskRequest(
                description="soak", request_id=uuid.uuid4().hex), timeout=5).task
            try:
                stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=task.task_id), timeout=5)
                ok += 1
            except errors.LLMAPIError:
                failed += 1
            except errors.OctoLLMError as error:  # anything else is a finding
                wrong.append(error)

        for _ in range(WARM_UP):
            pair()
        before = proc_status(running.process.pid)
        settle = Settle()
        warm_failed = failed

        start = time.monotonic()
        sent = 0
        for sent in range(1, int(SOAK_SECONDS * RATE) + 1):  # bounded by the schedule
            due = start + (sent - 1) / RATE
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            pair()
        elapsed = time.monotonic() - start
        after = proc_status(running.process.pid)
        samples = scrape(str(running.metrics_url))
        rows = dict(db_rows(running.db, "SELECT status, COUNT(*) FROM tasks GROUP BY status"))
        assert health_ok(running.target)

    total = WARM_UP + sent
    soak_failed = failed - warm_failed
    rate = soak_failed / sent
    sigma = math.sqrt(FAILURE_RATE * (1 - FAILURE_RATE) / sent)
    print(f"soak: {sent} pairs in {elapsed:.1f} s ({sent / elapsed:.1f}/s), error rate "
          f"{rate:.3f}; RSS {before['VmRSS']} -> {after['VmRSS']} kB, threads "
          f"{before['Threads']} -> {after['Threads']}")
    assert wrong == []
    assert ok + failed == total
    assert sent / elapsed >= 0.8 * RATE, "the client could not hold the rate"
    assert abs(rate - FAILURE_RATE) <= 3.5 * sigma, rate  # the injected rate, on the wire
    assert after["VmRSS"] - before["VmRSS"] <= RSS_GROWTH_KB, (before, after)
    assert after["Threads"] <= before["Threads"], (before, after)
    assert settle.leaked_threads() == []

    def handled(service: str, method: str, code: str) -> float:
        return metric(samples, "grpc_server_handled_total", grpc_service=service,
                      grpc_method=method, grpc_code=code)

    def started(service: str, method: str) -> float:
        return metric(samples, "grpc_server_started_total", grpc_service=service,
                      grpc_method=method)

    assert started(TASKS, "CreateTask") == handled(TASKS, "CreateTask", "OK") == total
    assert started(TASKS, "ExecuteTask") == total
    assert handled(TASKS, "ExecuteTask", "OK") == ok
    assert handled(TASKS, "ExecuteTask", "Unavailable") == failed
    assert started(ARM, "Complete") == total  # one arm attempt per execute, no breaker
    assert handled(ARM, "Complete", "Unavailable") == failed
    assert metric(samples, "octollm_errors_total", component="arm",
                  error_type="LLM_API_ERROR") == failed
    assert metric(samples, "octollm_errors_total", component="task_service",
                  error_type="LLM_API_ERROR") == failed
    assert rows == {"COMPLETED": ok, "FAILED": failed}
