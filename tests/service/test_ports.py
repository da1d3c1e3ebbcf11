"""A taken port stops a second service at startup, naming the port and the flag to change.

grpcio's default SO_REUSEPORT let a second ``python -m server`` "listen" on a port the first
already served and split the callers between two databases.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest

from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.service.harness import ROOT, RunningService, running_service


def _second(tmp_path: Path, *flags: str,
            module: str = "server") -> subprocess.CompletedProcess[str]:
    """Start another service with ``flags``; it must exit on its own (bounded wait)."""
    extra = [] if module == "server.arm" else ["--db", str(tmp_path / "second.db")]
    argv = [sys.executable, "-m", module, *extra, *flags]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=5)
        pytest.fail(f"the second service kept running on a taken port: {out}")
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def _port(target: str) -> str:
    return target.rpartition(":")[2]


def test_taken_grpc_port_exits_non_zero_naming_port_and_flag(tmp_path: Path) -> None:
    """A second service on the first's gRPC port exits 1: port and --port in the message."""
    with running_service(tmp_path) as first:
        port = _port(first.target)
        second = _second(tmp_path, "--port", port, "--metrics-port", "-1")
        _still_serves_alone(first)
    assert second.returncode == 1, second
    message = second.stderr.strip().splitlines()[-1]
    assert message.startswith("python -m server: cannot listen on")
    assert f"127.0.0.1:{port}" in message and "--port" in message
    assert "listening" not in second.stdout


def test_taken_metrics_port_exits_non_zero_naming_port_and_flag(tmp_path: Path) -> None:
    """A second service on the first's metrics port exits 1: port and --metrics-port named."""
    with running_service(tmp_path) as first:
        assert first.metrics_url is not None
        port = str(urlsplit(first.metrics_url).port)
        second = _second(tmp_path, "--port", "0", "--metrics-port", port)
        _still_serves_alone(first)
    assert second.returncode == 1, second
    message = second.stderr.strip().splitlines()[-1]
    assert f"127.0.0.1:{port}" in message and "--metrics-port" in message


def test_taken_arm_port_exits_non_zero_naming_port_and_flag(tmp_path: Path) -> None:
    """The built-in arm on a taken port (--arm-port), and a lone arm (--port): both exit 1."""
    with running_service(tmp_path) as first:
        port = _port(first.arm_target)
        built_in = _second(tmp_path, "--port", "0", "--metrics-port", "-1", "--arm-port", port)
        lone = _second(tmp_path, "--port", port, module="server.arm")
    assert built_in.returncode == 1, built_in
    assert f"127.0.0.1:{port}" in built_in.stderr and "--arm-port" in built_in.stderr
    assert lone.returncode == 1, lone
    assert f"127.0.0.1:{port}" in lone.stderr and "--port" in lone.stderr


def _still_serves_alone(first: RunningService) -> None:
    """Every create on the first service's port is found there again (no split traffic)."""
    with grpc.insecure_channel(first.target) as channel:
        stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
        for _ in range(10):  # fresh connections would be spread over every listener
            task = stub.CreateTask(tasks_pb2.CreateTaskRequest(description="mine"),
                                   timeout=10).task
            got = stub.GetTask(tasks_pb2.GetTaskRequest(task_id=task.task_id), timeout=10)
            assert got.task.task_id == task.task_id
