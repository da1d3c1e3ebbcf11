"""docs/observability.md runs as written; the Grafana dashboard queries only real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from octollm_grpc._core.breaker_metrics import BreakerMetrics
from octollm_grpc.observability._client_metrics import ClientMetrics
from octollm_grpc.observability._server_metrics import ServerMetrics
from tests.readme import run_examples, section_examples

DOCS = Path(__file__).resolve().parents[2] / "docs"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
             "gauge": ("",)}


def _exposed_names() -> set[str]:
    registry = CollectorRegistry()
    ServerMetrics(registry)
    ClientMetrics(registry)
    BreakerMetrics.for_registry(registry)
    return {family.name + suffix for family in registry.collect()
            for suffix in _SUFFIXES[family.type]}


def test_client_metrics_example_runs() -> None:
    """The client-metrics example prints 1.0: one call, handled OK once."""
    printed, _logs = run_examples(section_examples("client-metrics", DOCS / "observability.md"))
    assert printed == ["1.0"]


def test_otel_example_runs() -> None:
    """The OpenTelemetry example prints the failed span's name, status and attributes."""
    printed, _logs = run_examples(section_examples("otel", DOCS / "observability.md"))
    assert printed == ["demo.Tasks/Get ERROR Task task-1 not found",
                       "5 TASK_NOT_FOUND req-1"]


def test_dashboard_queries_only_metrics_the_library_exposes() -> None:
    """Every metric name in the dashboard's queries is one our registries expose."""
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    # Label lists ("by (grpc_method, grpc_code)") name labels, not metrics: drop them first.
    bare = [re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", expr) for expr in exprs]
    used = {name for expr in bare for name in re.findall(r"\b(?:grpc|octollm)_[a-z_]+", expr)}
    exposed = _exposed_names()
    assert used, "the dashboard queries no metric"
    assert used <= exposed, sorted(used - exposed)
    # The client and the server side are both charted.
    assert {"grpc_client_handled_total", "octollm_client_attempts_total",
            "octollm_client_throttled_total", "grpc_server_handled_total"} <= used
