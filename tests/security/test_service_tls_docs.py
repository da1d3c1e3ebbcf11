"""docs/service.md "Over TLS and mTLS": its commands run as written (certificates made by the
page's script, the service on ports of its own), with the real grpcurl and curl."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.readme import DOCS
from tests.service.harness import ROOT, running_service

PAGE_DIR = "/tmp/octollm-tls"


def _blocks() -> list[str]:
    text = (DOCS / "service.md").read_text(encoding="utf-8")
    body = text.split("<!-- service-tls:begin -->", 1)[1].split("<!-- service-tls:end -->")[0]
    return re.findall(r"```sh\n(.*?)```", body, flags=re.S)


def _run(command: str, directory: Path, target: str, url: str) -> subprocess.CompletedProcess[str]:
    command = (command.replace(PAGE_DIR, str(directory))
               .replace("127.0.0.1:50051", target)
               .replace("https://127.0.0.1:8080", url))
    return subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("block", [1, 2], ids=["tls", "mtls"])
def test_service_tls_page_runs_as_written(tmp_path: Path, block: int) -> None:
    """The page's script makes the certificates; the page's service command starts; its
    grpcurl creates a task and its curl lists it over HTTPS."""
    blocks = _blocks()
    assert len(blocks) == 3
    certs = tmp_path / "certs"
    made = subprocess.run(["bash", "-c", blocks[0].replace(PAGE_DIR, str(certs))], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    start, grpcurl, curl = blocks[block].strip().splitlines()
    words = shlex.split(start.replace(PAGE_DIR, str(certs)))
    flags = words[words.index("server") + 1:]
    with running_service(tmp_path, "--http-port", "0", *flags) as service:
        url = next(line.rpartition(" ")[2] for line in service.lines
                   if line.startswith("http gateway on "))
        created = _run(grpcurl, certs, service.target, url)
        assert created.returncode == 0, created.stderr
        task = json.loads(created.stdout)["task"]
        listed = _run(curl, certs, service.target, url)
        assert listed.returncode == 0, listed.stderr
        assert task["task_id"] in {t["task_id"] for t in json.loads(listed.stdout)["tasks"]}
