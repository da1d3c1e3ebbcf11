"""Run ``docs/walkthrough.md`` as a reader would: each console block's command, in order.

A block is ```` ```console ```` with one ``$ command`` line and the output after it. Commands
run with bash from the checkout's root, as written, except for what must differ on a shared
machine: services listen on ports they pick themselves (``--port 0``; the page's ports are then
mapped to the real ones in later commands), and ``/tmp/`` is a test directory. Output must
match line by line; only what differs on every run may differ: task ids (bound on first sight,
then substituted into later commands), times, request ids, ports and retry delays, and
trailing spaces.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Step", "Walkthrough", "steps", "walkthrough"]

_BLOCK = re.compile(r"```console\n(.*?)```", re.S)
_TASK_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_DOC_ID = re.compile(rf"{_TASK_ID}|TASK-\d+")
#: What differs on every run, as it appears in output (the doc's task ids are handled apart).
_VARIABLE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z"  # times
    r"|\b[0-9a-f]{32}\b"  # request ids
    r"|(?<=127\.0\.0\.1:)\d+"  # ports
    r'|(?<=retry after )\d+(?:\.\d+)?s|(?<="retry_delay":")\d+(?:\.\d+)?s'
    r'|(?<="retry_after":")\d+(?:\.\d+)?s')
_PATTERN = {"T": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z", "R": r"[0-9a-f]{32}",
            "P": r"\d+", "D": r"\d+(?:\.\d+)?s"}
_SERVER = re.compile(r"(?:^|; )\.venv/bin/python -m server\b")
STARTUP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Step:
    """One console block: the command and the output the page shows for it."""

    command: str
    output: list[str]


def steps(page: Path) -> list[Step]:
    """The page's console blocks, in order."""
    found = []
    for block in _BLOCK.findall(page.read_text(encoding="utf-8")):
        first, *output = block.rstrip("\n").split("\n")
        if not first.startswith("$ "):
            raise ValueError(f"a console block must start with '$ command': {first!r}")
        found.append(Step(first[2:], output))
    return found


def _kind(text: str) -> str:
    if re.fullmatch(r"\d{4}-.*Z", text):
        return "T"
    if re.fullmatch(r"[0-9a-f]{32}", text):
        return "R"
    if text.isdigit():
        return "P"
    return "D"


class Walkthrough:
    """Runs steps in order, remembering task ids and ports; stops its services at the end."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp
        self.ids: dict[str, str] = {}
        self.ports: dict[str, str] = {}
        self.created: list[str] = []
        self._services: list[subprocess.Popen[str]] = []

    def command(self, written: str) -> str:
        """The command to run for ``written``: real ports, ids and directory."""
        command = written.replace("/tmp/", f"{self.tmp}/")
        for doc_id in _DOC_ID.findall(command):
            if doc_id not in self.ids:  # a new page's id: the last task created and unbound
                unbound = [t for t in self.created if t not in self.ids.values()]
                self.ids[doc_id] = unbound[-1]
            command = command.replace(doc_id, self.ids[doc_id])
        if _SERVER.search(command):
            return re.sub(r"(--(?:metrics-|http-)?port) ([1-9]\d*)", r"\1 0", command)
        return re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{self.ports[m[1]]}",
                      command)

    def run(self, step: Step) -> list[str]:
        """Run one step; its output lines (a service: its startup lines)."""
        command = self.command(step.command)
        if _SERVER.search(command):
            return self._start(step.command, command)
        done = subprocess.run(["bash", "-c", command], cwd=self.root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60, check=False)
        lines = done.stdout.rstrip("\n").split("\n")
        self.created += re.findall(rf'"task_id": "({_TASK_ID})"', done.stdout) \
            if "/CreateTask" in command else []
        return lines

    def _start(self, written: str, command: str) -> list[str]:
        log = (self.tmp / f"service-{len(self._services)}.log").open("w", encoding="utf-8")
        process = subprocess.Popen(["bash", "-c", command], cwd=self.root, text=True,
                                   stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        self._services.append(process)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_read, args=(process.stdout, lines), daemon=True).start()
        wanted = {"task service listening on", "arm listening on"}
        if "--metrics-port -1" not in written:
            wanted.add("metrics on")
        if "--http-port -1" not in written:
            wanted.add("http gateway on")
        written_ports = dict(re.findall(r"--((?:metrics-)?port) (\d+)", written))
        seen: list[str] = []
        while wanted:
            line = lines.get(timeout=STARTUP_TIMEOUT)
            if line is None:
                raise AssertionError(f"{written!r} exited: {seen}")
            seen.append(line)
            prefix, _, value = line.rpartition(" ")
            wanted.discard(prefix)
            port = re.search(r":(\d+)(?:/|$)", value)
            if prefix == "task service listening on" and port and "port" in written_ports:
                self.ports[written_ports["port"]] = port[1]
            if prefix == "metrics on" and port and "metrics-port" in written_ports:
                self.ports[written_ports["metrics-port"]] = port[1]
        return seen

    def check(self, step: Step, actual: list[str]) -> None:
        """Assert ``actual`` is ``step.output`` up to what varies; bind the page's new ids."""
        # Trailing spaces are not compared (grpcurl prints "  " inside an empty message).
        expected = "\n".join(line.rstrip() for line in step.output)
        pattern, groups, pos = [], {}, 0
        tokens = sorted([*(("id", m) for m in _DOC_ID.finditer(expected)),
                         *(("var", m) for m in _VARIABLE.finditer(expected))],
                        key=lambda t: t[1].start())
        for kind, match in tokens:
            if match.start() < pos:
                continue
            pattern.append(re.escape(expected[pos:match.start()]))
            text = match.group()
            if kind == "var":
                pattern.append(_PATTERN[_kind(text)])
            elif text in self.ids:
                pattern.append(re.escape(self.ids[text]))
            elif text in groups:
                pattern.append(f"(?P={groups[text]})")
            else:
                groups[text] = f"id{len(groups)}"
                pattern.append(f"(?P<{groups[text]}>{_TASK_ID})")
            pos = match.end()
        pattern.append(re.escape(expected[pos:]))
        found = re.fullmatch("".join(pattern), "\n".join(line.rstrip() for line in actual))
        assert found, (f"output of {step.command!r} differs from the page:\n"
                       + "\n".join(actual))
        for text, name in groups.items():
            self.ids[text] = found[name]

    def close(self) -> None:
        """Stop every service started (SIGTERM to its process group) and wait for it."""
        for process in self._services:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def _read(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


@contextlib.contextmanager
def walkthrough(root: Path, tmp: Path) -> Iterator[Walkthrough]:
    """A :class:`Walkthrough` whose services are stopped on exit."""
    running = Walkthrough(root, tmp)
    try:
        yield running
    finally:
        running.close()
