"""The gateway's graceful stop follows ``--grace``: requests finish or get a 503 envelope.

``python -m server --http-port 0`` with a slow built-in arm; HTTP ``:execute`` calls are in
flight when SIGTERM arrives.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import grpc
import httpx

from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.http.test_gateway import http_url
from tests.service.harness import RunningService, running_service


def _execute_in_flight(service: RunningService, count: int) -> tuple[list[httpx.Response | str],
                                                                     list[threading.Thread]]:
    url = http_url(service)
    with httpx.Client(base_url=url, timeout=30) as http:
        ids = [http.post("/v1/tasks", json={"description": f"slow {n}"}).json()["task"]["task_id"]
               for n in range(count)]
    results: list[httpx.Response | str] = []

    def execute(task_id: str) -> None:
        try:
            results.append(httpx.post(f"{url}/v1/tasks/{task_id}:execute", timeout=30))
        except httpx.HTTPError as error:
            results.append(repr(error))

    threads = [threading.Thread(target=execute, args=(task_id,)) for task_id in ids]
    for thread in threads:
        thread.start()
    _wait_running(service, ids)
    return results, threads


def _wait_running(service: RunningService, ids: list[str]) -> None:
    """Until every task is RUNNING (its :execute call is in flight); at most 15 s."""
    deadline = time.monotonic() + 15
    with grpc.insecure_channel(service.target) as channel:
        stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
        while time.monotonic() < deadline:
            statuses = {stub.GetTask(tasks_pb2.GetTaskRequest(task_id=task_id),
                                     timeout=5).task.status for task_id in ids}
            if statuses == {tasks_pb2.TASK_STATUS_RUNNING}:
                return
            time.sleep(0.05)
    raise AssertionError("the :execute calls did not start")


def _assert_json_lines(service: RunningService) -> str:
    logs = service.logs()
    for line in logs.splitlines():
        json.loads(line)  # one JSON document a line: no multi-line traceback
    assert "CancelledError" not in logs and "Traceback" not in logs
    return logs


def test_in_flight_requests_finish_within_grace(tmp_path: Path) -> None:
    """SIGTERM with 8 :execute calls of ~1 s in flight and --grace 4: every one is 200."""
    with running_service(tmp_path, "--http-port", "0", "--rate-limit", "0", "--grace", "4",
                         "--arm-latency-ms", "1000") as service:
        results, threads = _execute_in_flight(service, 8)
        service.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(20)
        assert service.process.wait(20) == 0
        assert [getattr(r, "status_code", r) for r in results] == [200] * 8
        _assert_json_lines(service)


def test_requests_past_grace_get_503_and_the_stop_takes_grace(tmp_path: Path) -> None:
    """--grace 1 with :execute calls of 5 s in flight: each gets a 503 envelope with
    Retry-After (no plain-text 500, no CancelledError traceback), and the process exits
    about 1 s after SIGTERM, not after uvicorn's fixed 5 s."""
    with running_service(tmp_path, "--http-port", "0", "--rate-limit", "0", "--grace", "1",
                         "--arm-latency-ms", "5000") as service:
        results, threads = _execute_in_flight(service, 4)
        start = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(20) == 0
        took = time.monotonic() - start
        for thread in threads:
            thread.join(20)
        # 1 s of grace, then teardown: under 2 s on a quiet machine, 3.1 s seen under load;
        # the bug was 5.3 s (uvicorn's fixed 5 s, on top of teardown).
        assert took < 4.5, took
        for result in results:
            assert isinstance(result, httpx.Response), result
            assert result.status_code == 503, result.text
            assert result.headers["content-type"] == "application/json"
            assert result.headers["retry-after"] == "1"
            assert result.json()["error"] == "CAPACITY_EXCEEDED"
        logs = _assert_json_lines(service)
        assert '"event":"http.request.cut"' in logs
