"""Where a call's cost goes: per part of our stack, per object file, per Python function.

Without options: the Python time our sync server stack adds per call, measured without gRPC
around it (a unary handler wrapped exactly as a server wraps it, called with a minimal stand-in
for the servicer context), free of network and scheduling noise.

``python -m benchmarks.pathcost --profile`` attributes each path's instructions (success,
error, refusal; sync and aio), all counted by callgrind on real servers (see
:mod:`benchmarks.instructions`):

- **per part**: bare grpcio, a do-nothing interceptor (the floor: grpc's interception
  machinery), ``ours`` and ``ours`` with request ids, metrics, logging, or all three switched
  off (:data:`benchmarks.variants.ABLATIONS`); a part's cost is ``ours`` minus ``ours`` without
  it;
- **per object file** (self instructions, as ``callgrind_annotate`` lists them): the
  interpreter (all Python code: ours, grpcio's Python layer, prometheus-client, structlog),
  grpc's core, protobuf (upb), libc;
- **per C function**: the functions whose self instructions grew most from bare to ours;
- **per Python function**: cProfile, inclusive time per call of each function of the in-process
  sync stack (the interpreter's instructions cannot be split per Python function by callgrind:
  every Python function runs inside ``_PyEval_EvalFrameDefault``).

The figures go to stdout and, with ``--json PATH``, to a file.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import json
import pstats
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from benchmarks import instructions, payload, variants

_Details = collections.namedtuple("_Details", "method invocation_metadata")


class FakeContext:
    """The part of ``grpc.ServicerContext`` a unary handler and our stack use."""

    def __init__(self) -> None:
        self._trailers: Any = None
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        # What the overhead benchmark's clients send: a user agent and the bearer token.
        return (("user-agent", "grpc-python/bench"), *variants.AUTH_METADATA)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._trailers = metadata

    def trailing_metadata(self) -> Any:
        return self._trailers

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def details(self) -> str | None:
        return self._details

    def set_details(self, details: str) -> None:
        self._details = details

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        # As grpcio's sync context does: record the status, raise a bare Exception.
        self._code, self._details = code, details
        raise Exception()

    def abort_with_status(self, status: Any) -> None:
        self._trailers = status.trailing_metadata
        self.abort(status.code, status.details)

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> float | None:
        return None


def wrapped_call(variant: str, path: str) -> Callable[[], None]:
    """One call of ``path`` through ``variant``'s sync stack, as a no-argument function."""
    details: Any = _Details(path, ())
    handler: Any = variants.handlers(variant, "sync").service(details)
    for interceptor in reversed(list(variants.interceptors(variant, "sync"))):
        inner = handler
        handler = interceptor.intercept_service(lambda _, h=inner: h, details)
    behavior = handler.unary_unary
    request = payload.task_message()

    def call() -> None:
        # The error path ends in abort's exception, as it does under grpcio.
        with contextlib.suppress(Exception):
            behavior(request, FakeContext())

    return call


def _per_call_us(call: Callable[[], None], repeat: int, number: int) -> float:
    call()
    # CPU time of this thread, not wall time: other processes on the machine do not count.
    timer = timeit.Timer(call, timer=time.thread_time)
    runs = [min(timer.repeat(number=number, repeat=3)) / number * 1e6 for _ in range(repeat)]
    return statistics.median(runs)


def run(repeat: int = 5, number: int = 2000) -> dict[str, float]:
    """CPU µs per call for bare, our stack and our stack with rate limit and auth (``ours_all``),
    success and error (median of repeats)."""
    out: dict[str, float] = {}
    for kind, path in (("success", payload.GET_TASK_PATH),
                       ("error", payload.GET_MISSING_TASK_PATH)):
        for variant in ("bare", "ours", "ours_all"):
            out[f"{variant}_{kind}_us"] = _per_call_us(
                wrapped_call(variant, path), repeat, number)
    # A call the rate limiter refuses (ours) vs a bare abort with RESOURCE_EXHAUSTED.
    for variant in ("bare", "ours"):
        out[f"{variant}_reject_us"] = _per_call_us(
            wrapped_call(variant, payload.GET_THROTTLED_TASK_PATH), repeat, number)
    return out


#: The variants counted for the attribution: bare, the floor, ours and ours without each part.
PROFILE_VARIANTS = ("bare", "floor", "ours", *variants.ABLATIONS)
#: How object files are grouped (the first pattern found in the object's path wins).
_OBJECT_GROUPS = (
    ("libpython", "interpreter (all Python code)"),
    ("cygrpc", "grpc core (C/C++, Cython)"),
    ("_upb", "protobuf (upb)"),
    ("libc.so", "libc (malloc, memcpy, syscalls)"),
    ("ld-linux", "loader (thread-local storage)"),
)


def _group(obj: str) -> str:
    for pattern, name in _OBJECT_GROUPS:
        if pattern in obj:
            return name
    return "other"


def parts(server: dict[str, dict[str, float]], path: str) -> dict[str, float]:
    """Instructions per call of ``path`` per part: grpc's own, its interception machinery,
    our core, each optional part of ours, and what is left (the parts' interplay)."""
    ours = server["ours"][path]
    out = {
        "bare grpcio": server["bare"][path],
        "interception machinery (floor - bare)": server["floor"][path] - server["bare"][path],
        # Error mapping, deadline propagation, the OpenTelemetry check.
        "our core (ours_core - floor)": server["ours_core"][path] - server["floor"][path],
        "request ids (ours - ours_no_ids)": ours - server["ours_no_ids"][path],
        "metrics (ours - ours_no_metrics)": ours - server["ours_no_metrics"][path],
        "logging (ours - ours_no_logs)": ours - server["ours_no_logs"][path],
    }
    known = sum(list(out.values())[1:]) + server["bare"][path]
    out["interplay (ours - the sum above)"] = ours - known
    out["ours"] = ours
    return out


def profile_instructions(
    n: int, warmup: int, stacks: Sequence[str], out_dir: Path,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Count every :data:`PROFILE_VARIANTS` server on every path; attribute the counts."""
    result: dict[str, Any] = {"calls": n, "warmup": warmup}
    for stack in stacks:
        server: dict[str, dict[str, float]] = {}
        dumps: dict[str, dict[str, Path]] = {}
        for variant in PROFILE_VARIANTS:
            log(f"callgrind: {stack} {variant}")
            counts = instructions.count_server(variant, stack, out_dir / stack / variant,
                                               n, warmup)
            server[variant] = {kind: c.per_call for kind, c in counts.items()}
            dumps[variant] = {kind: c.dump for kind, c in counts.items()}
        by_path: dict[str, Any] = {}
        for kind in instructions.PATHS:
            costs = {v: instructions.self_costs(dumps[v][kind]) for v in ("bare", "ours")}
            groups: dict[str, dict[str, float]] = {}
            for variant, cost in costs.items():
                summed: collections.Counter[str] = collections.Counter()
                for (obj, _fn), value in cost.items():
                    summed[_group(obj)] += value
                groups[variant] = {g: v / n for g, v in summed.most_common()}
            grown: collections.Counter[str] = collections.Counter()
            for (obj, fn), value in costs["ours"].items():
                grown[f"{fn} [{Path(obj).name}]"] += value
            for (obj, fn), value in costs["bare"].items():
                grown[f"{fn} [{Path(obj).name}]"] -= value
            by_path[kind] = {
                "parts": parts(server, kind),
                "objects": groups,
                "c_functions_grown": {f: v / n for f, v in grown.most_common(15)},
            }
        result[stack] = {"server": server, "paths": by_path}
    return result


def profile_python(path: str, calls: int = 5000, top: int = 30) -> list[dict[str, Any]]:
    """cProfile of ``calls`` in-process calls of ``path`` through our sync stack: per function,
    calls per call and inclusive / own CPU µs per call, by inclusive time."""
    call = wrapped_call("ours", path)
    call()
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    stats: Any = getattr(pstats.Stats(profiler), "stats")  # noqa: B009 - untyped attribute
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.items():
        if "octollm_grpc" not in filename and "benchmarks" not in filename:
            continue
        module = filename.split("octollm_grpc/")[-1] if "octollm_grpc" in filename else \
            filename.split("/")[-1]
        rows.append({"function": f"{module}:{line}({name})", "calls": ncalls / calls,
                     "inclusive_us": cumtime / calls * 1e6, "own_us": tottime / calls * 1e6})
    rows.sort(key=lambda row: -row["inclusive_us"])
    return rows[:top]


def _print_profile(document: dict[str, Any]) -> None:
    for stack in ("sync", "aio"):
        if stack not in document:
            continue
        for kind, entry in document[stack]["paths"].items():
            print(f"\n== {stack}, {kind}: instructions per call, by part")
            for name, value in entry["parts"].items():
                print(f"  {value:>12,.0f}  {name}")
            print(f"-- {stack}, {kind}: self instructions per call by object, bare -> ours")
            bare, ours = entry["objects"]["bare"], entry["objects"]["ours"]
            for group in ours:
                print(f"  {bare.get(group, 0.0):>12,.0f} -> {ours[group]:>12,.0f}  {group}")
            print(f"-- {stack}, {kind}: C functions whose self instructions grew most")
            for name, value in entry["c_functions_grown"].items():
                print(f"  {value:>12,.0f}  {name}")
    for kind, rows in document.get("python", {}).items():
        print(f"\n== sync stack in-process, {kind}: our functions by inclusive CPU µs per call "
              "(cProfile)")
        for row in rows:
            print(f"  {row['inclusive_us']:>7.2f} incl {row['own_us']:>6.2f} own "
                  f"{row['calls']:>4.1f}x  {row['function']}")


def main(argv: Sequence[str] | None = None) -> None:
    """Print the per-call figures; with ``--profile``, where each path's instructions go."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pathcost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", action="store_true",
                        help="attribute each path's instructions (callgrind, real servers)")
    parser.add_argument("--stack", choices=("sync", "aio"), action="append")
    parser.add_argument("-n", type=int, default=200, help="counted calls per path")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the callgrind dumps in this directory")
    args = parser.parse_args(argv)
    if not args.profile:
        for key, value in run().items():
            print(f"{key}: {value:.1f}")
        return
    stacks = args.stack or ("sync", "aio")
    with tempfile.TemporaryDirectory(prefix="octollm-pathcost-") as scratch:
        document = profile_instructions(
            args.n, args.warmup, stacks, args.keep or Path(scratch),
            log=lambda text: print(f"[pathcost] {text}", flush=True))
    document["python"] = {kind: profile_python(path) for kind, path in (
        ("success", payload.GET_TASK_PATH), ("error", payload.GET_MISSING_TASK_PATH),
        ("reject", payload.GET_THROTTLED_TASK_PATH))}
    _print_profile(document)
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
