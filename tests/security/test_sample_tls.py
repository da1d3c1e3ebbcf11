"""The sample service over TLS and mTLS (``python -m server --tls-cert ... --tls-key ...
[--tls-client-ca ...]``), called with the real grpcurl and curl, its arm over TLS too."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.pki import Pair, Pki
from tests.service.harness import GRPCURL, ROOT, SERVICE, RunningService, running_service

CURL = shutil.which("curl")
TOKEN = "tls-sample-token-3e9d"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, made for this module only."""
    return Pki(tmp_path_factory.mktemp("sample-pki"))


@pytest.fixture(scope="module")
def server_files(pki: Pki) -> tuple[Path, Path]:
    """The service's certificate (full chain: leaf then CA) and key."""
    leaf = pki.server("127.0.0.1", "localhost")
    chain = pki.directory / "service-chain.pem"
    chain.write_bytes(leaf.cert + pki.ca_pem)
    return chain, leaf.key_file


def _service_url(service: RunningService) -> str:
    return next(line.rpartition(" ")[2] for line in service.lines
                if line.startswith("http gateway on "))


def _grpcurl(service: RunningService, pki: Pki, rpc: str, data: Any,
             client: Pair | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [str(GRPCURL), "-cacert", str(pki.ca_file), "-format-error",
            "-H", f"authorization: Bearer {TOKEN}", *extra]
    if client is not None:
        argv += ["-cert", str(client.cert_file), "-key", str(client.key_file)]
    argv += ["-d", json.dumps(data), service.target, f"{SERVICE}/{rpc}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _curl(pki: Pki, *words: str, client: Pair | None = None) -> subprocess.CompletedProcess[str]:
    assert CURL is not None, "curl is missing: `make test` installs it"
    argv = [CURL, "-sS", "--max-time", "20", "--cacert", str(pki.ca_file),
            "-w", "\n%{http_code}", "-D", "-"]
    if client is not None:
        argv += ["--cert", str(client.cert_file), "--key", str(client.key_file)]
    return subprocess.run([*argv, *words], capture_output=True, text=True, timeout=30,
                          check=False)


@pytest.fixture(scope="module")
def tls_service(tmp_path_factory: pytest.TempPathFactory,
                server_files: tuple[Path, Path]) -> Iterator[RunningService]:
    """The sample over TLS, with a bearer token required."""
    chain, key = server_files
    with running_service(tmp_path_factory.mktemp("tls"), "--http-port", "0",
                         "--tls-cert", str(chain), "--tls-key", str(key),
                         "--auth-token", TOKEN) as service:
        yield service


def test_grpcurl_over_tls_creates_and_executes_through_the_tls_arm(
        tls_service: RunningService, pki: Pki) -> None:
    """grpcurl -cacert creates a task and executes it (the service calls its arm over TLS);
    plaintext grpcurl against the TLS port fails and the service keeps serving."""
    created = _grpcurl(tls_service, pki, "CreateTask", {"description": "over TLS"})
    assert created.returncode == 0, created.stderr
    task_id = json.loads(created.stdout)["task"]["task_id"]
    executed = _grpcurl(tls_service, pki, "ExecuteTask", {"task_id": task_id})
    assert executed.returncode == 0, executed.stderr
    assert json.loads(executed.stdout)["task"]["status"] == "TASK_STATUS_COMPLETED"
    plain = subprocess.run([str(GRPCURL), "-plaintext", "-connect-timeout", "3", "-d", "{}",
                            tls_service.target,
                            f"{SERVICE}/ListTasks"], capture_output=True, text=True,
                           timeout=30, check=False)
    assert plain.returncode != 0 and "Failed to dial" in plain.stderr
    assert _grpcurl(tls_service, pki, "GetTask", {"task_id": task_id}).returncode == 0


def test_curl_over_https_reaches_the_service(tls_service: RunningService, pki: Pki) -> None:
    """curl --cacert talks to the HTTPS gateway, which forwards Authorization over TLS; a
    wrong token is 401 with an RFC 6750 challenge."""
    url = _service_url(tls_service)
    assert url.startswith("https://127.0.0.1:")
    done = _curl(pki, "-H", f"authorization: Bearer {TOKEN}", "-H",
                 "content-type: application/json", "-d", '{"description": "via https"}',
                 f"{url}/v1/tasks")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("\n200") or done.stdout.rstrip().endswith("201")
    refused = _curl(pki, "-H", "authorization: Bearer nope", f"{url}/v1/tasks")
    assert refused.stdout.rstrip().endswith("401")
    assert 'www-authenticate: Bearer error="invalid_token"' in refused.stdout.lower().replace(
        "bearer", "Bearer")
    assert "nope" not in refused.stdout


def test_sample_over_mtls_with_grpcurl_and_curl(tmp_path: Path, pki: Pki,
                                                server_files: tuple[Path, Path]) -> None:
    """With --tls-client-ca: grpcurl and curl with a client certificate get through (the arm
    is called over mTLS), without one the handshake fails on both ports."""
    chain, key = server_files
    client = pki.client(cn="grpcurl-user")
    with running_service(tmp_path, "--http-port", "0", "--tls-cert", str(chain),
                         "--tls-key", str(key), "--tls-client-ca", str(pki.ca_file),
                         "--auth-token", TOKEN) as service:
        created = _grpcurl(service, pki, "CreateTask", {"description": "mtls"}, client)
        assert created.returncode == 0, created.stderr
        task_id = json.loads(created.stdout)["task"]["task_id"]
        executed = _grpcurl(service, pki, "ExecuteTask", {"task_id": task_id}, client)
        assert executed.returncode == 0, executed.stderr
        anonymous = _grpcurl(service, pki, "GetTask", {"task_id": task_id}, None,
                             "-connect-timeout", "3")
        assert anonymous.returncode != 0 and "Failed to dial" in anonymous.stderr
        url = _service_url(service)
        ok = _curl(pki, "-H", f"authorization: Bearer {TOKEN}", f"{url}/v1/tasks/{task_id}",
                   client=client)
        assert ok.returncode == 0 and ok.stdout.rstrip().endswith("200"), ok.stderr
        assert task_id in ok.stdout
        refused = _curl(pki, "-H", f"authorization: Bearer {TOKEN}", f"{url}/v1/tasks")
        # No client certificate: the server ends the TLS session (curl: 35, 52 or 56).
        assert refused.returncode in (35, 52, 56), refused.stderr
        assert _grpcurl(service, pki, "GetTask", {"task_id": task_id}, client).returncode == 0


@pytest.mark.parametrize(("flags", "message"), [
    (["--tls-cert", "{cert}"], "--tls-cert and --tls-key go together"),
    (["--tls-key", "{key}"], "--tls-cert and --tls-key go together"),
    (["--tls-client-ca", "{cert}"], "--tls-client-ca needs --tls-cert and --tls-key"),
    (["--tls-cert", "{cert}", "--tls-key", "absent.key"], "no such file: absent.key"),
])
def test_tls_flags_are_checked(flags: list[str], message: str, server_files: tuple[Path, Path],
                               capsys: pytest.CaptureFixture[str]) -> None:
    """Half a TLS configuration, or a missing file, stops at the command line with why."""
    from server.config import parse_args

    cert, key = server_files
    argv = [f.format(cert=cert, key=key) for f in flags]
    with pytest.raises(SystemExit) as stopped:
        parse_args(argv, env={})
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_tls_is_off_by_default() -> None:
    """Without the flags the service stays plaintext (``make run`` is unchanged)."""
    from server.config import parse_args

    settings = parse_args([], env={})
    assert (settings.tls_cert, settings.tls_key, settings.tls_client_ca) == (None, None, None)


def test_standalone_arm_over_tls(tmp_path: Path, pki: Pki,
                                 server_files: tuple[Path, Path]) -> None:
    """``python -m server.arm --tls-cert --tls-key`` serves over TLS, and a TLS service given
    it as ``--arm-target`` executes tasks on it."""
    import subprocess as sp
    import sys

    chain, key = server_files
    arm = sp.Popen([sys.executable, "-m", "server.arm", "--port", "0", "--tls-cert", str(chain),
                    "--tls-key", str(key), "--arm-id", "tls-arm"], cwd=ROOT, stdout=sp.PIPE,
                   stderr=sp.PIPE, text=True)
    try:
        assert arm.stdout is not None
        line = arm.stdout.readline().strip()
        assert line.startswith("arm listening on "), arm.stderr.read() if arm.stderr else line
        target = line.rpartition(" ")[2]
        with running_service(tmp_path, "--tls-cert", str(chain), "--tls-key", str(key),
                             "--arm-target", target, "--auth-token", TOKEN) as service:
            created = _grpcurl(service, pki, "CreateTask", {"description": "remote arm"})
            task_id = json.loads(created.stdout)["task"]["task_id"]
            executed = _grpcurl(service, pki, "ExecuteTask", {"task_id": task_id})
            assert executed.returncode == 0, executed.stderr
            assert json.loads(executed.stdout)["task"]["status"] == "TASK_STATUS_COMPLETED"
            history = _grpcurl(service, pki, "GetTask", {"task_id": task_id})
            assert "completed by tls-arm" in history.stdout
    finally:
        arm.terminate()
        arm.wait(10)
