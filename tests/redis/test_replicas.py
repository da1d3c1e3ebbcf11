"""Two real ``python -m server`` processes with one ``--redis-url`` admit one limit in all."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.redis.server import RedisServer
from tests.service.harness import running_service

RATE = 20


def _admitted(stub: tasks_pb2_grpc.TaskServiceStub) -> bool:
    try:
        stub.ListTasks(tasks_pb2.ListTasksRequest(), timeout=5)
    except grpc.RpcError as err:
        code = err.code()  # type: ignore[attr-defined]
    else:
        return True
    if code is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        raise AssertionError(f"unexpected {code}")
    return False


def test_two_service_replicas_admit_about_the_rate_in_all(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """--rate-limit 20 --burst 20 on two replicas: a 20-call burst, then ~20 calls/s in all."""
    flags = ("--rate-limit", str(RATE), "--burst", str(RATE), "--redis-url", redis_server.url,
             "--log-level", "warning",
             # Not a deadline test: a loaded host must not send a decision to local buckets.
             "--redis-timeout", "1")
    with running_service(tmp_path, *flags, db=tmp_path / "a.db") as one, \
            running_service(tmp_path, *flags, db=tmp_path / "b.db") as two:
        channels = [grpc.insecure_channel(one.target), grpc.insecure_channel(two.target)]
        stubs = [tasks_pb2_grpc.TaskServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
        try:
            # The burst: calls alternate between replicas until the shared bucket is empty.
            started = time.monotonic()
            burst, calls, rejected_in_a_row = 0, 0, 0
            while rejected_in_a_row < 4 and calls < 400:
                if _admitted(stubs[calls % 2]):
                    burst, rejected_in_a_row = burst + 1, 0
                else:
                    rejected_in_a_row += 1
                calls += 1
            burst_seconds = time.monotonic() - started
            # The steady rate: one second of calls, alternating, as fast as they go.
            started = time.monotonic()
            per_replica = [0, 0]
            calls = 0
            while (elapsed := time.monotonic() - started) < 1.0 and calls < 5000:
                per_replica[calls % 2] += _admitted(stubs[calls % 2])
                calls += 1
        finally:
            for channel in channels:
                channel.close()
        logs = [line for line in one.logs().splitlines() + two.logs().splitlines()
                if "ratelimit_store" in line]
    assert not logs, logs  # Redis answered every decision: no replica fell back
    assert RATE <= burst <= RATE + RATE * burst_seconds + 1, (burst, burst_seconds)
    steady = sum(per_replica)
    # Per-process buckets would let ~40 through; the shared one ~20 (token timing: +-2).
    assert RATE * elapsed - 3 <= steady <= RATE * elapsed + 3, (per_replica, elapsed, calls)
    assert min(per_replica) > 0, per_replica


def test_service_starts_and_answers_with_redis_down(redis_server: RedisServer,
                                                   tmp_path: Path) -> None:
    """A replica whose Redis is unreachable still starts and serves, on its own buckets."""
    redis_server.kill()
    flags = ("--rate-limit", "3", "--burst", "3", "--rate-window", "3600",
             "--redis-url", redis_server.url, "--log-level", "warning")
    with running_service(tmp_path, *flags) as service:
        with grpc.insecure_channel(service.target) as channel:
            stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
            admitted = [_admitted(stub) for _ in range(5)]
        logs = service.logs()
    assert admitted == [True, True, True, False, False]  # the local bucket's limit holds
    assert logs.count("ratelimit_store_unavailable") == 1, logs
