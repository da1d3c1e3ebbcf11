"""The results: ``latest.json`` (every figure) and ``latest.md`` (the tables), plus the machine.

The headline keys the issue fixes are at the top level of each stack (``sync``, ``aio``) and of
the document (``storm_*``); everything behind them is under ``detail`` / ``storm`` / ``codec``.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import math
import os
import platform
import subprocess
from typing import Any

from benchmarks import hedging

HEADLINE_STACK_KEYS = (
    "server_error_cpu_ratio",
    "server_error_vs_peer_cpu_ratio",
    "server_rejection_cpu_ratio",
    "server_success_cpu_ratio",
    "client_success_cpu_ratio",
    "server_success_ratio",
    "server_error_ratio",
    "peer_error_ratio",
    "client_success_ratio",
    "brownout_goodput_ratio_limited",
    "brownout_p99_ratio_limited",
    "brownout_recovery_s_limited",
)
#: The instruction-count headlines (callgrind), per stack; present in a full run.
HEADLINE_IR_KEYS = (
    "server_success_ir_ratio",
    "server_error_ir_ratio",
    "server_error_vs_peer_ir_ratio",
    "server_rejection_ir_ratio",
    "client_success_ir_ratio",
)
#: The targets on them: (key, bound), the same on both stacks.
IR_TARGETS = (
    ("server_success_ir_ratio", 0.93),
    ("server_error_vs_peer_ir_ratio", 1.25),
    ("server_rejection_ir_ratio", 0.85),
    ("client_success_ir_ratio", 0.93),
)
HEADLINE_STORM_KEYS = (
    "storm_amplification_naive",
    "storm_amplification_ours",
    "storm_recovery_s_ours",
    *(f"{key}_{stack}" for stack in ("sync", "aio") for key in (
        "hedging_p99_reduction", "hedging_extra_attempts", "hedging_outage_amplification",
        "retry_outage_amplification")),
)
_PACKAGES = ("grpcio", "protobuf", "grpc-interceptor", "structlog", "prometheus-client",
             "octollm-grpc")
#: Scenario of the headline ratios: 32 calls in flight (throughput-bound).
HEADLINE_CONCURRENCY = 32
#: A storm client further behind its schedule than this sent bursts, not a steady rate.
_LAG_WARNING_S = 0.1


DEFINITIONS = {
    "*_ir_ratio": "instructions per call (valgrind callgrind, one call in flight, counted after "
                  "100 warm-up calls) of bare grpcio / ours, in the process whose stack "
                  "differs; above 1, ours is cheaper",
    "server_error_vs_peer_ir_ratio": "server instructions per failed call of the same work "
                                     "assembled from peers / ours; above 1, ours is cheaper",
    "server_rejection_ir_ratio": "server instructions per call of a bare handler aborting "
                                 "RESOURCE_EXHAUSTED / a call our rate limiter refuses",
    "ir": "instructions per call: server[variant][path] and client[variant]",
    "instructions": "every instruction-count run (back to back) and the largest relative "
                    "difference of any count between the first and another run",
    "server_success_ratio": "throughput of bare client -> server_interceptors() server / bare "
                            "server, GetTask succeeding, 32 calls in flight (median of paired "
                            "interleaved runs); per stack",
    "server_error_ratio": "the same for a handler raising TaskNotFoundError through "
                          "server_interceptors() vs a bare handler calling context.abort",
    "peer_error_ratio": "the same for grpc-interceptor's ExceptionToStatusInterceptor raising "
                        "its NotFound vs the bare context.abort handler",
    "client_success_ratio": "throughput of resilient_channel -> bare server / bare channel -> "
                            "bare server, 32 calls in flight",
    "*_c1": "the same ratio with 1 call in flight",
    "*_cpu_ratio": "bare / variant CPU time per call of the process whose stack differs",
    "server_error_vs_peer_cpu_ratio": "server CPU per failed call of the same work assembled "
                                      "from peers (grpc-interceptor + grpcio-status ErrorInfo, "
                                      "ResourceInfo, RequestInfo + a structlog JSON line + a "
                                      "prometheus counter and histogram + a request id) / ours; "
                                      "above 1, ours is cheaper",
    "server_rejection_cpu_ratio": "server CPU per call of a bare handler aborting "
                                  "RESOURCE_EXHAUSTED / a call our rate limiter refuses",
    "storm_amplification_*": "outage trigger: attempts the server received for the calls "
                             "started during the trigger / those calls",
    "storm_recovery_s_*": "outage trigger: seconds from its end until every later bin has at "
                          "least recovered_share of its calls succeeding (after_s if never)",
    "brownout_*": "our server stack with (limited) and without (unlimited) the adaptive "
                  "concurrency limit; capacity halved for the window, callers keep their rate: "
                  "goodput in the window / reduced capacity, p99 of admitted calls / p99 at "
                  "half capacity, seconds to recover (see benchmarks/brownout.py)",
    "half_capacity_refusals_*": "calls refused at half the server's capacity",
    "server_python_us": "CPU microseconds per call of the sync stack's own Python, no gRPC",
    "codec": "CPU microseconds per to_status / from_rpc_error",
    **hedging.DEFINITIONS,
}


def machine() -> dict[str, Any]:
    """Where the run happened: CPU, cores, OS, Python, package versions, commit."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            check=False, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": load_average(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "commit": commit or "unknown",
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (how busy the machine was), or [] if unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def stack_headlines(detail: dict[str, Any]) -> dict[str, float]:
    """The four ratios of one stack (and their 1-in-flight twins), medians of paired runs."""
    def ratio(scenario: str, variant: str) -> float:
        return float(detail[scenario][variant]["throughput_ratio"]["median"])

    out: dict[str, float] = {}
    for suffix, concurrency in (("", HEADLINE_CONCURRENCY), ("_c1", 1)):
        success, error = f"success_c{concurrency}", f"error_c{concurrency}"
        if success not in detail:
            continue
        out[f"server_success_ratio{suffix}"] = ratio(success, "ours")
        out[f"server_all_parts_success_ratio{suffix}"] = ratio(success, "ours_all")
        out[f"server_error_ratio{suffix}"] = ratio(error, "ours")
        out[f"peer_success_ratio{suffix}"] = ratio(success, "peer")
        out[f"server_floor_success_ratio{suffix}"] = ratio(success, "floor")
        out[f"peer_error_ratio{suffix}"] = ratio(error, "peer")
        out[f"client_success_ratio{suffix}"] = ratio(success, "client")
        out[f"client_floor_success_ratio{suffix}"] = ratio(success, "client_floor")
        out[f"server_success_cpu_ratio{suffix}"] = float(
            detail[success]["ours"]["cpu_ratio"]["median"])
        out[f"server_error_cpu_ratio{suffix}"] = float(
            detail[error]["ours"]["cpu_ratio"]["median"])
        out[f"client_success_cpu_ratio{suffix}"] = float(
            detail[success]["client"]["cpu_ratio"]["median"])
        ours_error = detail[error]["ours"]
        if "vs_peer_full_cpu_ratio" in ours_error:
            out[f"server_error_vs_peer_cpu_ratio{suffix}"] = float(
                ours_error["vs_peer_full_cpu_ratio"]["median"])
            out[f"server_error_vs_peer_ratio{suffix}"] = float(
                ours_error["vs_peer_full_throughput_ratio"]["median"])
            out[f"peer_full_error_cpu_ratio{suffix}"] = float(
                detail[error]["peer_full"]["cpu_ratio"]["median"])
        reject = f"reject_c{concurrency}"
        if reject in detail:
            out[f"server_rejection_cpu_ratio{suffix}"] = float(
                detail[reject]["ours"]["cpu_ratio"]["median"])
            out[f"server_rejection_ratio{suffix}"] = ratio(reject, "ours")
    return out


def storm_headlines(storm: dict[str, dict[str, Any]], reset_s: float) -> dict[str, Any]:
    """The storm keys: amplification and recovery in the outage (all modes under ``storm``)."""
    outage = storm["outage"]
    return {
        "storm_amplification_none": outage["none"]["amplification"],
        "storm_amplification_naive": outage["naive"]["amplification"],
        "storm_amplification_ours": outage["ours"]["amplification"],
        "storm_naive_share_at_max_attempts": outage["naive"]["share_at_max_attempts"],
        "storm_recovery_s_none": outage["none"]["recovery_s"],
        "storm_recovery_s_naive": outage["naive"]["recovery_s"],
        "storm_recovery_s_ours": outage["ours"]["recovery_s"],
        "storm_breaker_reset_s": reset_s,
    }


def targets(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against this run's figures: value, bound, margin, met (not asserted)."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float, bound: float, at_least: bool) -> None:
        margin = value - bound if at_least else bound - value
        rows.append({"target": name, "value": value, "bound": bound,
                     "kind": ">=" if at_least else "<=", "margin": margin, "met": margin >= 0})

    # Instruction counts (deterministic) carry the targets; CPU ratios are the second view.
    for stack in ("sync", "aio"):
        figures = document[stack]
        for key, bound in IR_TARGETS:
            if key in figures:
                add(f"{stack} {key}", figures[key], bound, True)
    add("storm amplification with our stack", document["storm_amplification_ours"], 1.1, False)
    max_attempts = document["config"]["storm"]["max_attempts"]
    add("storm amplification of naive retries (reaching max attempts)",
        document["storm_amplification_naive"], 0.9 * max_attempts, True)
    add("storm recovery with our stack, s (breaker reset + 1 s)",
        document["storm_recovery_s_ours"], document["storm_breaker_reset_s"] + 1.0, False)
    if "brownout" in document:
        from benchmarks.brownout import TARGETS
        for stack in ("sync", "aio"):
            for key, bound, at_least in TARGETS:
                add(f"{stack} {key}", document[stack][key], bound, at_least)
    if "hedging" in document:
        for name, value, bound, at_least in hedging.target_rows(document):
            add(name, value, bound, at_least)
    return rows


def missing_or_not_finite(document: dict[str, Any]) -> list[str]:
    """Headline keys absent from ``document`` or not finite numbers (empty when all is well)."""
    bad = []
    for stack in ("sync", "aio"):
        for key in HEADLINE_STACK_KEYS:
            value = document.get(stack, {}).get(key)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                bad.append(f"{stack}.{key}")
    for key in HEADLINE_STORM_KEYS:
        value = document.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            bad.append(key)
    if document.get("config", {}).get("ir_runs"):
        for stack in ("sync", "aio"):
            for key in HEADLINE_IR_KEYS:
                value = document.get(stack, {}).get(key)
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    bad.append(f"{stack}.{key}")
    return bad


def now_utc() -> str:
    """The current time, ISO 8601 UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


# -- Markdown -------------------------------------------------------------------------------


def _loads(values: Any) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "unknown"


def _busy(document: dict[str, Any]) -> bool:
    # More runnable work than cores, besides this benchmark's own two processes.
    cores = document["machine"].get("cores") or 1
    loads = [*document["machine"].get("load_average_at_start", [])[:1],
             *document.get("load_average_at_end", [])[:1]]
    return any(load > cores + 0.5 for load in loads)


def _r(summary: dict[str, float]) -> str:
    return f"{summary['median']:.3f} [{summary['min']:.2f}-{summary['max']:.2f}]"


def _n(value: float, digits: int = 0) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return f"{value:,.{digits}f}"


_VARIANT_NAMES = {
    "bare": "bare grpcio",
    "ours": "octollm server stack (default)",
    "ours_all": "octollm server stack + rate limit + auth",
    "peer": "grpc-interceptor",
    "peer_full": "the same work from peers",
    "floor": "do-nothing server interceptor",
    "client": "octollm resilient channel",
    "client_floor": "do-nothing client interceptor",
}


_IR_PATHS = (("success", "success"), ("error", "error (`NOT_FOUND`)"),
             ("reject", "refusal (`RESOURCE_EXHAUSTED`)"))
_IR_SERVERS = ("bare", "floor", "ours", "peer_full", "peer")


def _instruction_lines(document: dict[str, Any]) -> list[str]:
    """The instruction-count tables: every count of every run, the headline ratios."""
    block = document.get("instructions")
    if not block:
        return []
    runs = block["runs"]
    first = runs[0]
    lines = [
        f"**Instructions per call** (valgrind callgrind, one call in flight; "
        f"{first['warmup']} warm-up calls uncounted, then {first['calls']} counted per path; "
        f"{len(runs)} runs back to back, largest difference of any count between them "
        f"{block['max_relative_difference']:.2%}). Server counts are the whole server "
        "process (grpc's core, the interpreter, the stack); client counts the whole client "
        "process. In thousands, run 1" + (" / run 2" if len(runs) > 1 else "") + ":",
        "",
        "| stack | path | " + " | ".join(_VARIANT_NAMES[v] for v in _IR_SERVERS) + " |",
        "|---|---|" + "---|" * len(_IR_SERVERS),
    ]

    def k(values: list[float]) -> str:
        return " / ".join(f"{v / 1000:.1f}" for v in values)

    for stack in ("sync", "aio"):
        for path, label in _IR_PATHS:
            cells = [k([run[stack]["server"][v][path] for run in runs])
                     if v in first[stack]["server"] else "" for v in _IR_SERVERS]
            lines.append(f"| {stack} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "| stack | client: bare channel | do-nothing client interceptor "
                  "| resilient_channel |", "|---|---|---|---|"]
    for stack in ("sync", "aio"):
        cells = [k([run[stack]["client"][v] for run in runs])
                 for v in ("bare", "client_floor", "client")]
        lines.append(f"| {stack} | " + " | ".join(cells) + " |")
    lines += ["", "Instruction ratios (bare / ours, peer / ours; above 1, ours is cheaper):", "",
              "| ratio | sync | aio |", "|---|---|---|"]
    for key in (*HEADLINE_IR_KEYS, "server_floor_success_ir_ratio",
                "server_floor_error_ir_ratio", "peer_full_success_ir_ratio",
                "server_success_vs_peer_ir_ratio", "peer_success_ir_ratio",
                "peer_error_ir_ratio", "client_floor_success_ir_ratio"):
        if key in document["sync"]:
            lines.append(f"| `{key}` | {document['sync'][key]:.3f} | "
                         f"{document['aio'][key]:.3f} |")
    return [*lines, ""]


def markdown(document: dict[str, Any]) -> str:
    """``latest.md``: headline ratios, codec timings, storm figures, then every window."""
    m = document["machine"]
    cfg = document["config"]
    lines = [
        f"Run `{document['mode']}` at {document['generated_at']}, commit `{m['commit']}`: "
        f"{m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ". "
        f"Load average (1/5/15 min) at start {_loads(m.get('load_average_at_start'))}, "
        f"at end {_loads(document.get('load_average_at_end'))}"
        + (" (a busy machine: the spreads say how much to trust each figure)."
           if _busy(document) else "."),
        "",
        f"Overhead: {cfg['reps']} interleaved repetitions of {cfg['window_s']} s windows per "
        "variant; ratio = variant / bare grpcio in the same repetition, median [min-max]; "
        f"headline at {HEADLINE_CONCURRENCY} calls in flight. Message: ~1.1 KiB "
        "`google.protobuf.Value` (a task record). Client and server in separate processes "
        "on 127.0.0.1.",
        "",
    ]
    lines += _instruction_lines(document)
    lines += ["Targets on the instruction ratios (reported here, never asserted):", "",
              "| target | measured | bound | margin | met |", "|---|---|---|---|---|"]
    for row in document.get("targets", []):
        lines.append(f"| {row['target']} | {row['value']:.3f} | {row['kind']} {row['bound']:.2f} "
                     f"| {row['margin']:+.3f} | {'yes' if row['met'] else 'no'} |")
    lines += [
        "",
        "Throughput kept vs bare grpcio (median [min-max] of the paired ratios), and the CPU "
        "ratio: bare / variant CPU time per call on the side whose stack differs (what a "
        "CPU-bound process keeps; steadier than throughput on a busy machine).",
        "",
        "| variant vs bare grpcio | sync throughput | sync CPU | aio throughput | aio CPU "
        "| |",
        "|---|---|---|---|---|---|",
    ]
    rows = (
        ("server stack, success", "success", "ours", ""),
        ("server stack + rate limit + auth, success", "success", "ours_all", ""),
        ("server stack, error (`TaskNotFoundError` vs `context.abort`)", "error", "ours",
         ""),
        ("grpc-interceptor, error (`NotFound` vs `context.abort`)", "error", "peer", ""),
        ("the same work as ours from peers, error (vs `context.abort`)", "error", "peer_full",
         ""),
        ("server stack, rate-limit rejection (vs `context.abort(RESOURCE_EXHAUSTED)`)",
         "reject", "ours", ""),
        ("grpc-interceptor, success", "success", "peer", ""),
        ("do-nothing server interceptor, success (the floor under any server stack)",
         "success", "floor", ""),
        ("client stack, success (resilient channel vs bare channel)", "success", "client",
         ""),
        ("do-nothing client interceptor, success (the floor under the client stack)", "success",
         "client_floor", ""),
    )
    for concurrency in cfg["concurrencies"][::-1]:
        for label, kind, variant, target in rows:
            cells = []
            for stack in ("sync", "aio"):
                entry = document[stack]["detail"][f"{kind}_c{concurrency}"][variant]
                cells += [_r(entry["throughput_ratio"]), f"{entry['cpu_ratio']['median']:.3f}"]
            tail = target if concurrency == HEADLINE_CONCURRENCY else ""
            lines.append(f"| {label}, {concurrency} in flight | " + " | ".join(cells)
                         + f" | {tail} |")
    lines += [
        "",
        "Server CPU per call (µs, median; the server's share of the work, so the overhead a "
        "CPU-bound server would see):",
        "",
        "| scenario | stack | bare | do-nothing interceptor | ours | ours + rate limit + auth "
        "| grpc-interceptor | same work from peers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stack in ("sync", "aio"):
        for key, scenario in document[stack]["detail"].items():
            cpu = [scenario[v]["server_cpu_us_per_call"]["median"] if v in scenario else math.nan
                   for v in ("bare", "floor", "ours", "ours_all", "peer", "peer_full")]
            lines.append(f"| {key} | {stack} | " + " | ".join(_n(c) for c in cpu) + " |")

    lines += [
        "",
        "Every window (median over repetitions): calls/s, p50 and p99 latency in µs.",
        "",
        "| stack | scenario | variant | calls/s | p50 µs | p99 µs | ratio vs bare |",
        "|---|---|---|---|---|---|---|",
    ]
    for stack in ("sync", "aio"):
        for key, scenario in document[stack]["detail"].items():
            for variant, entry in scenario.items():
                ratio = _r(entry["throughput_ratio"]) if "throughput_ratio" in entry else "1"
                lines.append(
                    f"| {stack} | {key} | {_VARIANT_NAMES.get(variant, variant)} | "
                    f"{_n(entry['throughput']['median'])} | {_n(entry['p50_us']['median'])} | "
                    f"{_n(entry['p99_us']['median'])} | {ratio} |")

    py = document.get("server_python_us")
    if py:
        lines += [
            "",
            "Python time per call of the sync server stack itself, without gRPC around it "
            "(`python -m benchmarks.pathcost`; CPU µs, median): success "
            f"{py['ours_success_us']:.1f} (with rate limit and auth "
            f"{py.get('ours_all_success_us', math.nan):.1f}; bare handler "
            f"{py['bare_success_us']:.1f}), error {py['ours_error_us']:.1f} (bare "
            f"`context.abort` {py['bare_error_us']:.1f}).",
        ]
    lines += [
        "",
        "Rich status encode (`to_status`) and decode (`from_rpc_error`) per error, CPU µs "
        "(median):",
        "",
        "| error | encode µs | decode µs | status bytes |",
        "|---|---|---|---|",
    ]
    for name, entry in document["codec"].items():
        lines.append(f"| {name} | {_n(entry['encode_us']['median'], 1)} | "
                     f"{_n(entry['decode_us']['median'], 1)} | {entry['status_bytes']} |")

    storm_cfg = cfg["storm"]
    lines += [
        "",
        f"Retry storm: {storm_cfg['callers']} asyncio callers at {_n(storm_cfg['rate'])} calls/s "
        f"in total against a server with capacity {_n(storm_cfg['capacity'])} calls/s; "
        f"{storm_cfg['before_s']} s normal, {storm_cfg['trigger_s']} s trigger (the 30 s "
        f"incident scaled x{storm_cfg['scale']:.3f}), {storm_cfg['after_s']} s after. "
        f"Up to {storm_cfg['max_attempts']} attempts per call for both retrying clients; naive "
        "= the standard's `retry_with_backoff` with its delays scaled alike; ours = "
        f"`resilient_channel` (budget + breaker, reset {storm_cfg['breaker_reset_s']} s). "
        "Amplification = attempts received / calls, for the calls started in the trigger.",
        "",
        "| trigger | client | amplification | at max attempts | success before / during / "
        "after | goodput during trigger /s | peak attempts/s | recovery s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, kinds in document["storm"].items():
        for kind, r in kinds.items():
            share = r["success_share"]
            lines.append(
                f"| {mode} | {kind} | {r['amplification']:.2f} | "
                f"{r['share_at_max_attempts']:.0%} | {share['before']:.0%} / "
                f"{share['trigger']:.0%} / {share['after']:.0%} | "
                f"{_n(r['goodput_per_s']['trigger'])} | {_n(r['peak_attempts_per_s'])} | "
                f"{r['recovery_s']:.2f}{'' if r['recovered'] else ' (not recovered)'} |")
    if "brownout" in document:
        from benchmarks.brownout import markdown as brownout_markdown
        lines += brownout_markdown(document["brownout"])
    lags = [r["client_max_lag_s"] for kinds in document["storm"].values() for r in kinds.values()]
    if max(lags, default=0.0) > _LAG_WARNING_S:
        lines += ["", f"Caution: a storm client fell up to {max(lags):.2f} s behind its schedule "
                      "(the machine was busy), so its calls came in bursts; the storm figures "
                      "of this run are disturbed."]
    lines += hedging.markdown_lines(document)
    return "\n".join(lines) + "\n"
