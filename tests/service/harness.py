"""Run the task service (``python -m server``) as a subprocess and call it with grpcurl.

The service is started with ``--port 0 --metrics-port 0`` and reports the ports it got on
stdout; nothing here guesses a free port. Its logs (stderr) go to a file that a failing test
can read.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from octollm_grpc.observability._logs import FLUSH_INTERVAL

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = Path(sys.executable).with_name("grpcurl")
SERVICE = "octollm.tasks.v1.TaskService"
STARTUP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Grpcurl:
    """One grpcurl run: exit status and output."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The response: stdout parsed as one JSON document."""
        return json.loads(self.stdout)

    def status(self) -> Any:
        """The failed call's ``google.rpc.Status`` as JSON (``-format-error`` puts it on stderr)."""
        return json.loads(self.stderr)

    def detail(self, type_name: str) -> dict[str, Any]:
        """The decoded detail of ``type_name`` (e.g. ``google.rpc.BadRequest``) in the status."""
        wanted = f"type.googleapis.com/{type_name}"
        for detail in self.status().get("details", []):
            if detail.get("@type") == wanted:
                return dict(detail)
        raise AssertionError(f"no {type_name} detail in {self.stderr}")


@dataclass
class RunningService:
    """A started ``python -m server`` process and its endpoints."""

    process: subprocess.Popen[str]
    target: str
    arm_target: str
    metrics_url: str | None
    db: Path
    log: Path
    lines: list[str] = field(default_factory=list)

    def grpcurl(self, *words: str, data: Any = None, headers: Sequence[str] = ()) -> Grpcurl:
        """Run ``grpcurl -plaintext -format-error [-H ...] [-d DATA] TARGET WORDS...``.

        ``words`` are what follows the target: ``"list"``, ``"describe", SYMBOL`` or a
        ``Service/Method``; ``data`` is the JSON request (a string, or an object to dump).
        """
        argv = [str(GRPCURL), "-plaintext", "-format-error"]
        for header in headers:
            argv += ["-H", header]
        if data is not None:
            argv += ["-d", data if isinstance(data, str) else json.dumps(data)]
        argv += [self.target, *words]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return Grpcurl(done.returncode, done.stdout, done.stderr)

    def call(self, rpc: str, data: Any = None, *, headers: Sequence[str] = ()) -> Grpcurl:
        """Call ``TaskService/<rpc>`` with ``data`` as the JSON request."""
        return self.grpcurl(f"{SERVICE}/{rpc}", data=data if data is not None else {},
                            headers=headers)

    def logs(self, timeout: float = 10.0) -> str:
        """Everything the service logged so far.

        The service writes its log lines in the background, every ``FLUSH_INTERVAL`` (0.1 s):
        this waits until the log has not grown for four intervals (bounded by ``timeout``),
        so lines of calls that already returned are in, and "not in the log" means it.
        """
        settle, step = 4 * FLUSH_INTERVAL, FLUSH_INTERVAL / 2
        deadline = time.monotonic() + timeout
        size, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_size = self.log.stat().st_size
            if now_size != size:
                size, stable_since = now_size, time.monotonic()
            elif time.monotonic() - stable_since >= settle:
                break
            time.sleep(step)
        return self.log.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def _reader(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def launch(tmp_path: Path, *flags: str, module: str = "server", db: Path | None = None,
           env: dict[str, str] | None = None, wants: tuple[str, ...] = ("target", "arm"),
           ) -> RunningService:
    """Start ``python -m MODULE --port 0 --metrics-port 0 --db ... FLAGS`` and wait until ready.

    Later flags win (argparse), so ``"--port", "50123"`` in ``flags`` restarts on a known port.
    ``module="server.arm"`` starts a lone arm (``wants=("arm",)``, no service flags added).
    """
    db = db or tmp_path / "tasks.db"
    log = tmp_path / f"{module.replace('.', '-')}-{len(list(tmp_path.glob('*.log')))}.log"
    if module == "server.arm":
        argv = [sys.executable, "-m", module, *flags]
    else:
        argv = [sys.executable, "-m", module, "--port", "0", "--metrics-port", "0",
                "--db", str(db), "--grace", "5",
                "--http-port", "-1", *flags]
    with log.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log_file,
                                   text=True, env={**os.environ, **(env or {})})
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()
    found: dict[str, str] = {}
    seen: list[str] = []
    needed = set(wants) | ({"metrics"} if module != "server.arm" else set())
    try:
        while not needed <= found.keys():
            try:
                line = lines.get(timeout=STARTUP_TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"{module} did not start: {log.read_text()}") from None
            if line is None:
                raise AssertionError(f"{module} exited: {log.read_text()}")
            seen.append(line)
            prefix, _, value = line.rpartition(" ")
            key = {"task service listening on": "target", "arm listening on": "arm",
                   "metrics on": "metrics"}.get(prefix)
            if key:
                found[key] = value
    except BaseException:
        process.kill()
        process.wait(5)
        raise
    return RunningService(process, found.get("target", ""), found.get("arm", ""),
                          found.get("metrics"), db, log, seen)


def stop(service: RunningService, *, kill: bool = False) -> int:
    """End the process (SIGKILL when ``kill``, else SIGTERM); its exit status."""
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        return service.process.wait(20)
    except subprocess.TimeoutExpired:
        service.process.kill()
        return service.process.wait(5)


@contextlib.contextmanager
def running_service(tmp_path: Path, *flags: str, db: Path | None = None,
                    env: dict[str, str] | None = None) -> Iterator[RunningService]:
    """:func:`launch` ``python -m server`` with ``FLAGS``, as a context manager (SIGTERM after)."""
    running = launch(tmp_path, *flags, db=db, env=env)
    try:
        yield running
    finally:
        stop(running)
