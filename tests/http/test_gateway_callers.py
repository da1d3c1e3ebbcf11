"""Each HTTP client has its own rate-limit budget, and bad credentials spend none.

The HTTP clients are told apart by their loopback address (127.0.0.2, 127.0.0.3: all of
127/8 is loopback on Linux), against ``python -m server --http-port 0 --auth-token ...``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest

from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from server.http_callers import CLIENT_KEY, PROOF_KEY
from tests.http.test_gateway import GATEWAY_LINE, http_url
from tests.service.harness import ROOT, running_service

TOKEN = "Bearer sesame"


def _client(url: str, address: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


def test_unauthenticated_flood_spends_no_one_s_budget(tmp_path: Path) -> None:
    """A flood without (or with a wrong) token is 401 every time, never 429, and a caller with
    a valid token from another address keeps every request of its budget."""
    with running_service(tmp_path, "--http-port", "0", "--auth-token", "sesame",
                         "--rate-limit", "5", "--rate-window", "60") as service:
        url = http_url(service)
        with _client(url, "127.0.0.2") as attacker, _client(url, "127.0.0.3") as user:
            flood = [attacker.get("/v1/tasks").status_code for _ in range(30)]
            flood += [attacker.get("/v1/tasks", headers={"authorization": "Bearer wrong"})
                      .status_code for _ in range(30)]
            # Nor do they cost a body read or a parse: 401 before the (invalid) body.
            flood += [attacker.post("/v1/tasks", content=b"{" * 500_000).status_code
                      for _ in range(3)]
            served = [user.get("/v1/tasks", headers={"authorization": TOKEN}).status_code
                      for _ in range(5)]
        assert flood == [401] * 63
        assert served == [200] * 5


def test_each_http_client_has_its_own_budget(tmp_path: Path) -> None:
    """Without auth, a client over its limit gets 429 while another address is still served,
    and a gRPC caller claiming an HTTP client's key (without the gateway's secret) is limited
    as itself."""
    with running_service(tmp_path, "--http-port", "0", "--rate-limit", "3",
                         "--rate-window", "60") as service:
        url = http_url(service)
        with _client(url, "127.0.0.2") as greedy, _client(url, "127.0.0.3") as other:
            greedy_codes = [greedy.get("/v1/tasks").status_code for _ in range(5)]
            other_codes = [other.get("/v1/tasks").status_code for _ in range(3)]
        assert greedy_codes == [200, 200, 200, 429, 429]
        assert other_codes == [200, 200, 200]

        with grpc.insecure_channel(service.target) as channel:
            stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
            forged = ((CLIENT_KEY, "address:127.0.0.9"), (PROOF_KEY, "guessed"))
            codes = []
            for _ in range(4):
                try:
                    stub.ListTasks(tasks_pb2.ListTasksRequest(), metadata=forged, timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    codes.append(error.code())  # type: ignore[attr-defined]
        # Its own peer budget (3), not a fresh one per claimed client.
        assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6_loopback_serves_grpc_and_http(tmp_path: Path, host: str) -> None:
    """--host ::1 and --host [::1]: gRPC, the gateway and metrics all listen on [::1]."""
    with running_service(tmp_path, "--host", host, "--http-port", "0",
                         "--rate-limit", "0") as service:
        assert service.target.startswith("[::1]:")
        with grpc.insecure_channel(service.target) as channel:
            stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
            stub.ListTasks(tasks_pb2.ListTasksRequest(), timeout=10)
        url = http_url(service)
        assert url.startswith("http://[::1]:")
        assert httpx.get(f"{url}/v1/tasks", timeout=10).status_code == 200
        assert service.metrics_url is not None and service.metrics_url.startswith("http://[::1]:")
        assert httpx.get(service.metrics_url, timeout=10).status_code == 200


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_taken_ipv6_http_port_is_a_clear_error(tmp_path: Path) -> None:
    """A taken --http-port on [::1] stops the service naming the address, the reason, the flag."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as taken:
        taken.bind(("::1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "server", "--host", "[::1]", "--port", "0",
             "--metrics-port", "-1", "--http-port", str(port),
             "--db", str(tmp_path / "tasks.db")],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert message == (f"python -m server: cannot listen on [::1]:{port} (Address already in "
                       f"use); choose another port with --http-port; -1 turns the gateway off")
    assert GATEWAY_LINE not in done.stdout
