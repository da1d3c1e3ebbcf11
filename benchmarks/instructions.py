"""Instructions per call, counted by valgrind's callgrind: the benchmark's deterministic view.

CPU time on a shared 2-core machine moves by up to 10% from run to run; the number of
instructions a process executes for a call does not depend on what else runs. For each server
variant and stack, one server process runs under ``valgrind --tool=callgrind
--instr-atstart=no`` (:mod:`benchmarks.ir_server`); this process is its client, one call in
flight. Per path (success, error, refusal): ``WARMUP`` calls uncounted, ``callgrind_control -i
on PID``, ``N`` calls, ``callgrind_control -d PID`` (dump, counters zeroed), ``-i off``; the
dump's ``totals:`` / N is the server's instructions per call (all its threads: grpc's core, the
interpreter, our Python). For the client side the roles swap: the client runs under callgrind
(:mod:`benchmarks.ir_client`) against a bare server.

``python -m benchmarks.instructions`` prints one run's counts.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc

from benchmarks import payload, variants

ROOT = Path(__file__).resolve().parents[1]
#: Server variants counted, and the paths each is called on.
SERVER_VARIANTS = ("bare", "floor", "ours", "peer", "peer_full")
CLIENT_VARIANTS = ("bare", "client_floor", "client")
PATHS: dict[str, tuple[str, grpc.StatusCode | None]] = {
    "success": (payload.GET_TASK_PATH, None),
    "error": (payload.GET_MISSING_TASK_PATH, grpc.StatusCode.NOT_FOUND),
    "reject": (payload.GET_THROTTLED_TASK_PATH, grpc.StatusCode.RESOURCE_EXHAUSTED),
}
_CALL_TIMEOUT_S = 120.0
_START_TIMEOUT_S = 300.0
_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


def available() -> bool:
    """Whether valgrind and callgrind_control are on the PATH."""
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def _env() -> dict[str, str]:
    # A fixed hash seed: dict and set layouts (and so the instructions) repeat run to run.
    return {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}


def _valgrind(out_dir: Path, extra: Sequence[str]) -> list[str]:
    # --dump-instr=yes: costs per instruction address, so the spin-wait can be told apart.
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=yes",
            f"--callgrind-out-file={out_dir}/callgrind.out.%p", *extra, sys.executable]


def control(pid: int, *args: str) -> None:
    """``callgrind_control ARGS PID`` (raises when it fails)."""
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True,
                   timeout=_START_TIMEOUT_S)


def _dumps(out_dir: Path, pid: int) -> set[Path]:
    return set(out_dir.glob(f"callgrind.out.{pid}.*"))


def dump(pid: int, out_dir: Path) -> tuple[int, Path]:
    """Dump ``pid``'s counters (zeroing them); return the dump's total instructions and file."""
    before = _dumps(out_dir, pid)
    control(pid, "-d")
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        for path in sorted(_dumps(out_dir, pid) - before):
            found = _TOTALS.search(path.read_bytes())
            if found:
                return int(found.group(1)), path
        time.sleep(0.05)
    raise RuntimeError(f"callgrind of process {pid} wrote no dump in {out_dir}")


@dataclass(frozen=True)
class Count:
    """One path's count over ``calls`` calls: every instruction of the process (``total``, the
    dump's ``totals:``), those of them spent in the lock spin-wait (``spin``), and the dump."""

    total: int
    calls: int
    dump: Path
    spin: int = 0

    @property
    def per_call(self) -> float:
        """Instructions per call, the spin-wait left out (see :func:`spin_loop`)."""
        return (self.total - self.spin) / self.calls

    @property
    def spin_per_call(self) -> float:
        """Instructions per call spent in the spin-wait."""
        return self.spin / self.calls


#: absl::Mutex's spin-wait in grpc's core (x86-64): reload the lock word, leave if it is free
#: (or the spin gives up), count down, loop. ``mov (%rdi),%rax; test $0x11,%al; jne;
#: test $0x8,%al; je; sub $1,%edx; test %edx,%edx; jg``.
_SPIN_LOOP = re.compile(
    rb"\x48\x8b\x07\xa8\x11\x75.\xa8\x08\x74.\x83\xea\x01\x85\xd2\x7f.", re.DOTALL)


@functools.cache
def _loop() -> tuple[int, int] | None:
    return spin_loop()


def _grpc_core_object() -> Path:
    from grpc._cython import cygrpc  # where grpc's core is linked in

    return Path(cygrpc.__file__)


def spin_loop(obj: Path | None = None) -> tuple[int, int] | None:
    """The address range (in the object file) of absl::Mutex's spin-wait loop in grpc's core,
    or ``None`` when this build has no such loop (then nothing is left out).

    A thread wanting a held lock polls it up to 1500 times before it sleeps. Under valgrind
    the threads run one at a time, so how many times it polls depends on when valgrind
    switches threads, not on the work the call does: between two runs this loop alone moved
    from 2k to 20k instructions per call while every other function stayed within 0.5%. The
    counts leave it out (and keep it apart, as ``spin``).
    """
    data = (obj or _grpc_core_object()).read_bytes()
    found = list(_SPIN_LOOP.finditer(data))
    if len(found) != 1:
        return None
    # The text segment of the wheel's cygrpc maps at its file offset (vaddr == offset).
    return found[0].start(), found[0].end()


@contextlib.contextmanager
def _process(command: list[str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=log, env=_env(), cwd=ROOT)
    try:
        yield process
    finally:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _line(process: subprocess.Popen[bytes]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    if not line:
        raise RuntimeError(f"process {process.pid} exited (code {process.poll()}); "
                           "see its log")
    return line


def _calls(method: Callable[..., Any], expect: grpc.StatusCode | None, n: int) -> None:
    request = payload.task_message()
    for _ in range(n):
        try:
            method(request, timeout=_CALL_TIMEOUT_S, metadata=variants.AUTH_METADATA)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        if code is not (expect or grpc.StatusCode.OK):
            raise RuntimeError(f"expected {expect}, the call ended {code}")


def count_server(
    variant: str, stack: str, out_dir: Path, n: int, warmup: int,
    paths: Sequence[str] = tuple(PATHS),
) -> dict[str, Count]:
    """The server's instructions over ``n`` calls of each path, for ``variant`` on ``stack``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [*_valgrind(out_dir, ()), "-m", "benchmarks.ir_server", variant, stack]
    with open(out_dir / f"server-{variant}-{stack}.log", "wb") as log, \
            _process(command, log) as process:
        port = int(_line(process))
        counts: dict[str, Count] = {}
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            for kind in paths:
                path, expect = PATHS[kind]
                method = channel.unary_unary(path, request_serializer=payload.serialize,
                                             response_deserializer=payload.deserialize)
                _calls(method, expect, warmup)
                control(process.pid, "-i", "on")
                _calls(method, expect, n)
                total, dump_path = dump(process.pid, out_dir)
                control(process.pid, "-i", "off")
                counts[kind] = Count(total, n, dump_path, spin_cost(dump_path, _loop()))
    return counts


def count_client(variant: str, stack: str, target: str, out_dir: Path, n: int,
                 warmup: int) -> Count:
    """The client's instructions over ``n`` successful calls through ``variant`` on ``stack``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [*_valgrind(out_dir, ()), "-m", "benchmarks.ir_client", stack, variant, target,
               str(n), str(warmup)]
    with open(out_dir / f"client-{variant}-{stack}.log", "wb") as log, \
            _process(command, log) as process:
        assert process.stdin is not None
        if _line(process) != "ready":
            raise RuntimeError("client did not warm up")
        control(process.pid, "-i", "on")
        process.stdin.write(b"go\n")
        process.stdin.flush()
        if _line(process) != "done":
            raise RuntimeError("client did not finish")
        total, dump_path = dump(process.pid, out_dir)
    return Count(total, n, dump_path, spin_cost(dump_path, _loop()))


@contextlib.contextmanager
def bare_server(stack: str) -> Iterator[str]:
    """A bare server (not under valgrind) for the client counts; yields its target."""
    command = [sys.executable, "-m", "benchmarks.ir_server", "bare", stack]
    with _process(command, subprocess.DEVNULL) as process:  # type: ignore[arg-type]
        yield f"127.0.0.1:{int(_line(process))}"


def run(
    n: int = 200, warmup: int = 100, out_dir: Path | None = None,
    server_variants: Sequence[str] = SERVER_VARIANTS,
    client_variants: Sequence[str] = CLIENT_VARIANTS,
    stacks: Sequence[str] = ("sync", "aio"), log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """One full count: per stack, ``server`` (variant -> path -> instructions per call) and
    ``client`` (variant -> instructions per call). The dumps stay in ``out_dir`` when given;
    without it they go to a temporary directory, removed at the end."""
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="octollm-ir-") as scratch:
            return run(n, warmup, Path(scratch), server_variants, client_variants, stacks, log)
    out = out_dir
    result: dict[str, Any] = {}
    for stack in stacks:
        server: dict[str, dict[str, float]] = {}
        for variant in server_variants:
            log(f"instructions: {stack} server {variant}")
            counts = count_server(variant, stack, out / stack / variant, n, warmup)
            server[variant] = {kind: count.per_call for kind, count in counts.items()}
        client: dict[str, float] = {}
        with bare_server(stack) as target:
            for variant in client_variants:
                log(f"instructions: {stack} client {variant}")
                client[variant] = count_client(
                    variant, stack, target, out / stack / f"client-{variant}", n, warmup).per_call
        result[stack] = {"server": server, "client": client}
    result["calls"], result["warmup"] = n, warmup
    return result


def headlines(counts: dict[str, Any]) -> dict[str, float]:
    """The issue's instruction ratios of one stack's counts (above 1.0 ours is cheaper)."""
    server, client = counts["server"], counts["client"]
    ours, bare = server["ours"], server["bare"]
    out = {
        "server_success_ir_ratio": bare["success"] / ours["success"],
        "server_error_ir_ratio": bare["error"] / ours["error"],
        "server_error_vs_peer_ir_ratio": server["peer_full"]["error"] / ours["error"],
        "server_rejection_ir_ratio": bare["reject"] / ours["reject"],
        "client_success_ir_ratio": client["bare"] / client["client"],
    }
    if "floor" in server:
        out["server_floor_success_ir_ratio"] = bare["success"] / server["floor"]["success"]
        out["server_floor_error_ir_ratio"] = bare["error"] / server["floor"]["error"]
    if "peer" in server:
        out["peer_success_ir_ratio"] = bare["success"] / server["peer"]["success"]
        out["peer_error_ir_ratio"] = bare["error"] / server["peer"]["error"]
    if "peer_full" in server:
        out["peer_full_success_ir_ratio"] = bare["success"] / server["peer_full"]["success"]
        out["server_success_vs_peer_ir_ratio"] = (
            server["peer_full"]["success"] / ours["success"])
    if "client_floor" in client:
        out["client_floor_success_ir_ratio"] = client["bare"] / client["client_floor"]
    return out


def max_relative_difference(first: dict[str, Any], second: dict[str, Any]) -> float:
    """The largest |a - b| / min(a, b) over every count the two runs share."""
    worst = 0.0
    for stack in ("sync", "aio"):
        if stack not in first or stack not in second:
            continue
        pairs = [(first[stack]["client"][v], second[stack]["client"][v])
                 for v in first[stack]["client"]]
        for variant, paths in first[stack]["server"].items():
            pairs += [(value, second[stack]["server"][variant][kind])
                      for kind, value in paths.items()]
        for a, b in pairs:
            worst = max(worst, abs(a - b) / min(a, b))
    return worst


_TABLES = {"ob": "ob", "cob": "ob", "fn": "fn", "cfn": "fn",
           "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl"}


def _self_lines(dump_path: Path) -> Iterator[tuple[str, str, int, int]]:
    """``(object, function, instruction address, instructions)`` of every self-cost line of a
    callgrind dump (``--dump-instr=yes``; the address is 0 without it)."""
    names: dict[str, dict[str, str]] = {"ob": {}, "fn": {}, "fl": {}}
    current = {"ob": "?", "fn": "?"}
    skip_next = False
    address = 0
    instr_positions = False
    with open(dump_path) as lines:
        for raw in lines:
            line = raw.rstrip("\n")
            if not line or line[0] == "#":
                continue
            if line[0].isdigit() or line[0] in "+-*":
                parts = line.split()
                if instr_positions:
                    position = parts[0]
                    if position.startswith(("+", "-")):
                        address += int(position)
                    elif position != "*":
                        address = int(position, 0)
                    costs = parts[2:]
                else:
                    costs = parts[1:]
                if skip_next:  # the inclusive cost of the call just named
                    skip_next = False
                    continue
                if costs:
                    cost = int(costs[0])
                    yield (current["ob"], current["fn"], address,
                           cost - (1 << 64) if cost >= 1 << 63 else cost)
                continue
            field, _, value = line.partition("=")
            if field == "calls":
                skip_next = True
                continue
            if line.startswith("positions:"):
                instr_positions = "instr" in line.split(":", 1)[1].split()
                continue
            table = _TABLES.get(field)
            if table is None:
                continue
            name = value
            if value.startswith("("):
                ident, _, rest = value.partition(")")
                ident = ident[1:]
                if rest.strip():
                    names[table][ident] = rest.strip()
                name = names[table].get(ident, value)
            if field in ("ob", "fn"):
                current[field] = name


def self_costs(dump_path: Path) -> dict[tuple[str, str], int]:
    """Instructions per (object file, function) of a callgrind dump, self cost only.

    Self costs are exact whenever counting was switched on; inclusive ones are not usable
    here (a call entered before ``-i on`` returns with a cost callgrind never saw begin, so
    callgrind_annotate --inclusive shows wrapped-around numbers).
    """
    costs: dict[tuple[str, str], int] = {}
    for obj, fn, _address, cost in _self_lines(dump_path):
        costs[(obj, fn)] = costs.get((obj, fn), 0) + cost
    return costs


def spin_cost(dump_path: Path, loop: tuple[int, int] | None) -> int:
    """Instructions of the dump spent in ``loop`` (see :func:`spin_loop`) in grpc's core."""
    if loop is None:
        return 0
    low, high = loop
    return sum(cost for obj, _fn, address, cost in _self_lines(dump_path)
               if low <= address < high and "cygrpc" in obj)


def main(argv: Sequence[str] | None = None) -> None:
    """Print one run's counts per stack, variant and path, and the headline ratios."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions",
                                     description=__doc__)
    parser.add_argument("-n", type=int, default=200, help="counted calls per path")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--stack", choices=("sync", "aio"), action="append")
    parser.add_argument("--server", action="append", help="server variants (default: all)")
    parser.add_argument("--client", action="append", help="client variants (default: all)")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the dumps in this directory (default: removed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the counts here")
    args = parser.parse_args(argv)
    counts = run(args.n, args.warmup, args.out, args.server or SERVER_VARIANTS,
                 args.client if args.client is not None else CLIENT_VARIANTS,
                 args.stack or ("sync", "aio"),
                 log=lambda text: print(f"[ir] {text}", file=sys.stderr, flush=True))
    for stack in args.stack or ("sync", "aio"):
        for variant, paths in counts[stack]["server"].items():
            print(f"{stack} server {variant}: " + ", ".join(
                f"{kind} {value:,.0f}" for kind, value in paths.items()))
        for variant, value in counts[stack]["client"].items():
            print(f"{stack} client {variant}: {value:,.0f}")
    if args.out is not None:
        print(f"dumps in {args.out}")
    if args.json is not None:
        args.json.write_text(json.dumps(counts, indent=1) + "\n")


if __name__ == "__main__":
    main()
