"""Draw docs/dashboard-arm-failure.svg: the dashboard's panels from a real run of the sample.

Grafana cannot be installed where this project is built, so this is not a Grafana screenshot.
It starts the sample task service (``python -m server``) with its in-process arm failing a
share of calls (``--arm-failure-rate``), drives CreateTask + ExecuteTask from a few threads,
scrapes the service's ``/metrics`` once a second, computes the queries of
``docs/grafana-dashboard.json`` by hand over each one-second step (rates, ratios, histogram
quantiles) and draws them as SVG line charts. Run from the checkout:

    .venv/bin/python docs/render_dashboard.py [--seconds 30] [--failure-rate 0.3]
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc  # noqa: E402

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]
Series = dict[str, list[float]]


def _start(failure_rate: float, workdir: Path) -> tuple[subprocess.Popen[str], str, str]:
    argv = [sys.executable, "-m", "server", "--port", "0", "--metrics-port", "0",
            "--db", str(workdir / "tasks.db"), "--arm-seed", "7",
            "--arm-failure-rate", str(failure_rate), "--arm-breaker-reset", "3"]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE,  # noqa: S603 - our own
                               stderr=subprocess.DEVNULL, text=True)
    target = metrics = ""
    assert process.stdout is not None
    for line in process.stdout:
        prefix, _, value = line.strip().rpartition(" ")
        if prefix == "task service listening on":
            target = value
        elif prefix == "metrics on":
            metrics = value
            break
    if not target or not metrics:
        process.kill()
        raise SystemExit("the sample service did not start")
    return process, target, metrics


def _scrape(url: str) -> Sample:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
        text = response.read().decode()
    sample: Sample = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            sample[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return sample


def _drive(target: str, stop: threading.Event) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
        while not stop.is_set():
            try:
                task = stub.CreateTask(tasks_pb2.CreateTaskRequest(description="summarise"),
                                       timeout=5).task
                stub.ExecuteTask(tasks_pb2.ExecuteTaskRequest(task_id=task.task_id),
                                 timeout=5)
            except grpc.RpcError:
                pass  # failures are what the dashboard shows


def _sum(sample: Sample, name: str, **match: str) -> float:
    return sum(v for (n, labels), v in sample.items()
               if n == name and all(dict(labels).get(k) == w for k, w in match.items()))


def _by(sample: Sample, name: str, label: str, **match: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (n, labels), v in sample.items():
        found = dict(labels)
        if n == name and all(found.get(k) == w for k, w in match.items()):
            out[found.get(label, "")] += v
    return out


def _quantile(q: float, before: Sample, after: Sample, name: str, **match: str) -> float:
    """histogram_quantile over one step: linear inside the bucket, as Prometheus does."""
    buckets = _by(after, name + "_bucket", "le", **match)
    earlier = _by(before, name + "_bucket", "le", **match)
    pairs = sorted((float(le), buckets[le] - earlier.get(le, 0.0)) for le in buckets)
    total = pairs[-1][1] if pairs else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in pairs:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


PanelFn = Callable[[Sample, Sample, float], dict[str, float]]

TASK = {"grpc_service": "octollm.tasks.v1.TaskService", "grpc_method": "ExecuteTask"}
ARM = {"grpc_service": "octollm.arms.v1.ArmService", "grpc_method": "Complete"}


def _rate_by_code(name: str, match: dict[str, str]) -> PanelFn:
    def panel(a: Sample, b: Sample, dt: float) -> dict[str, float]:
        after, before = _by(b, name, "grpc_code", **match), _by(a, name, "grpc_code", **match)
        return {code: (after[code] - before.get(code, 0.0)) / dt for code in after}
    return panel


def _attempts_per_call(a: Sample, b: Sample, dt: float) -> dict[str, float]:
    attempts = _sum(b, "octollm_client_attempts_total", **ARM) - _sum(
        a, "octollm_client_attempts_total", **ARM)
    calls = _sum(b, "grpc_client_started_total", **ARM) - _sum(
        a, "grpc_client_started_total", **ARM)
    return {"Complete": attempts / calls if calls else float("nan")}


def _retries(a: Sample, b: Sample, dt: float) -> dict[str, float]:
    return {kind: (_sum(b, f"octollm_client_{kind}_total", **ARM)
                   - _sum(a, f"octollm_client_{kind}_total", **ARM)) / dt
            for kind in ("retries", "throttled")}


def _latency(a: Sample, b: Sample, dt: float) -> dict[str, float]:
    return {f"p{int(q * 100)}": _quantile(q, a, b, "grpc_server_handling_seconds", **TASK)
            for q in (0.5, 0.99)}


def _breaker(a: Sample, b: Sample, dt: float) -> dict[str, float]:
    return {"state": max(_by(b, "octollm_client_circuit_state", "method").values(),
                         default=float("nan"))}


PANELS: list[tuple[str, str, PanelFn]] = [
    ("Server: ExecuteTask handled / s by code", "/s",
     _rate_by_code("grpc_server_handled_total", TASK)),
    ("Server: ExecuteTask latency p50 / p99", "s", _latency),
    ("Client (task service -> arm): Complete handled / s by code", "/s",
     _rate_by_code("grpc_client_handled_total", ARM)),
    ("Client: attempts per call", "", _attempts_per_call),
    ("Client: retries and throttled retries / s", "/s", _retries),
    ("Client: breaker state (0 closed, 1 half-open, 2 open)", "", _breaker),
]

COLOURS = ["#2f7ed8", "#d9534f", "#5cb85c", "#f0ad4e", "#8e44ad", "#7f8c8d"]


def _svg(series: list[Series], seconds: list[float], note: str) -> str:
    width, height, cols = 520, 230, 2
    rows = (len(PANELS) + cols - 1) // cols
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * width}" '
           f'height="{rows * height + 40}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="#ffffff"/>',
           f'<text x="10" y="{rows * height + 28}" fill="#555">{note}</text>']
    for index, ((title, unit, _fn), data) in enumerate(zip(PANELS, series, strict=True)):
        x0, y0 = (index % cols) * width + 45, (index // cols) * height + 30
        w, h = width - 70, height - 75
        out.append(f'<text x="{x0}" y="{y0 - 12}" font-weight="bold">{title}</text>')
        out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" '
                   f'stroke="#ccc"/>')
        values = [v for points in data.values() for v in points if v == v]
        top = max(values, default=1.0) * 1.1 or 1.0
        out.append(f'<text x="{x0 - 5}" y="{y0 + 4}" text-anchor="end">{top:.3g}{unit}</text>')
        out.append(f'<text x="{x0 - 5}" y="{y0 + h}" text-anchor="end">0</text>')
        out.append(f'<text x="{x0 + w}" y="{y0 + h + 14}" text-anchor="end">'
                   f'{seconds[-1]:.0f} s</text>')
        for n, (label, points) in enumerate(sorted(data.items())):
            colour = COLOURS[n % len(COLOURS)]
            coords = " ".join(
                f"{x0 + w * t / seconds[-1]:.1f},{y0 + h - h * v / top:.1f}"
                for t, v in zip(seconds, points, strict=True) if v == v)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                       f'points="{coords}"/>')
            out.append(f'<text x="{x0 + 110 * n}" y="{y0 + h + 28}" fill="{colour}">'
                       f'&#9632; {label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--failure-rate", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard-arm-failure.svg")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        process, target, metrics_url = _start(args.failure_rate, Path(workdir))
        stop = threading.Event()
        drivers = [threading.Thread(target=_drive, args=(target, stop), daemon=True)
                   for _ in range(args.workers)]
        try:
            scrapes = [(time.monotonic(), _scrape(metrics_url))]
            for driver in drivers:
                driver.start()
            for _ in range(args.seconds):
                time.sleep(1.0)  # a real run: one scrape per second of real load
                scrapes.append((time.monotonic(), _scrape(metrics_url)))
        finally:
            stop.set()
            for driver in drivers:
                driver.join(10)
            process.terminate()
            process.wait(10)
    start = scrapes[0][0]
    seconds = [t - start for t, _ in scrapes[1:]]
    series: list[Series] = []
    for _title, _unit, fn in PANELS:
        data: Series = defaultdict(list)
        steps = [fn(a, b, tb - ta) for (ta, a), (tb, b) in itertools.pairwise(scrapes)]
        labels = sorted({label for step in steps for label in step})
        for step in steps:
            for label in labels:
                data[label].append(step.get(label, float("nan")))
        series.append(dict(data))
    note = (f"Drawn by docs/render_dashboard.py from a real {args.seconds}-s run of the sample "
            f"(arm failure rate {args.failure_rate}, {args.workers} client threads); "
            f"not a Grafana screenshot.")
    args.out.write_text(_svg(series, seconds, note), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
