"""A caller's own time budget running out is no verdict on the service for the gateway."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.http.test_gateway import http_url
from tests.service.harness import running_service


def test_tasks_timing_out_on_their_own_budget_do_not_open_the_gateways_breaker(
        tmp_path: Path) -> None:
    """Five executions ending on their own 1 s timeout (504) leave ExecuteTask open to others."""
    with running_service(tmp_path, "--http-port", "0", "--rate-limit", "0",
                         "--arm-latency-ms", "1500") as service:
        with httpx.Client(base_url=http_url(service), timeout=30) as http:
            def create(body: dict[str, object]) -> str:
                response = http.post("/v1/tasks", json=body)
                assert response.status_code == 200, response.text
                task_id: str = response.json()["task"]["task_id"]
                return task_id

            short = [create({"description": f"hurry {i}", "timeout_seconds": 1})
                     for i in range(5)]
            patient = create({"description": "take your time"})
            with ThreadPoolExecutor(5) as pool:
                timed_out = list(pool.map(
                    lambda task_id: http.post(f"/v1/tasks/{task_id}:execute"), short))
            assert [r.status_code for r in timed_out] == [504] * 5
            assert {r.json()["error"] for r in timed_out} == {"TIMEOUT_ERROR"}
            assert {r.json()["details"]["timeout_cause"] for r in timed_out} == {
                "callers_budget"}
            response = http.post(f"/v1/tasks/{patient}:execute")
        assert response.status_code == 200, response.text
        assert response.json()["task"]["status"] == "TASK_STATUS_COMPLETED"
