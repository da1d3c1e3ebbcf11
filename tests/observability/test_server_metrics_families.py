"""The server's call metrics read like prometheus-client's own Counter and Histogram."""

from __future__ import annotations

import threading

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from octollm_grpc.server import ServerMetrics

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_BUCKETS = (0.001, 0.01, 0.1, 1.0)


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The exposition lines, creation stamps' values left out (they are wall-clock times)."""
    lines = generate_latest(registry).decode().splitlines()
    return [line.rsplit(" ", 1)[0] if "_created{" in line else line for line in lines]


def test_same_samples_as_prometheus_client_families() -> None:
    """Starts, successes, other codes, handling times and errors: the same exposition (names,
    labels, bucket bounds, values, creation series) as prometheus-client's Counter and
    Histogram."""
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = ServerMetrics(ours_registry, buckets=_BUCKETS)
    started = Counter("grpc_server_started_total", "Total number of RPCs started on the server.",
                      _LABELS, registry=theirs_registry)
    handled = Counter(
        "grpc_server_handled_total",
        "Total number of RPCs completed on the server, regardless of success or failure.",
        (*_LABELS, "grpc_code"), registry=theirs_registry)
    handling = Histogram(
        "grpc_server_handling_seconds",
        "Histogram of response latency (seconds) of gRPC that had been application-level "
        "handled by the server.", _LABELS, buckets=_BUCKETS, registry=theirs_registry)
    errors = Counter("octollm_errors_total", "Total errors by type",
                     ("error_type", "component"), registry=theirs_registry)
    error_duration = Histogram("octollm_error_duration_seconds",
                               "Time to detect and handle error", ("error_type",),
                               buckets=_BUCKETS, registry=theirs_registry)

    method = ours.for_method("unary", "a.S", "M")
    labels = ("unary", "a.S", "M")
    started.labels(*labels)
    handled.labels(*labels, "OK")
    handling.labels(*labels)
    for seconds in (0.0005, 0.001, 0.02, 3.0):
        method.start()
        method.succeed(seconds)
        started.labels(*labels).inc()
        handled.labels(*labels, "OK").inc()
        handling.labels(*labels).observe(seconds)
    method.start()
    method.handled(grpc.StatusCode.NOT_FOUND).inc()
    method.handling.observe(0.05)
    started.labels(*labels).inc()
    handled.labels(*labels, "NotFound").inc()
    handling.labels(*labels).observe(0.05)

    # A second method, then a code of the first: listed in the order they were made.
    other = ours.for_method("server_stream", "a.S", "Watch")
    other_labels = ("server_stream", "a.S", "Watch")
    for family in (started, handling):
        family.labels(*other_labels)
    handled.labels(*other_labels, "OK")
    other.handled(grpc.StatusCode.CANCELLED).inc()
    handled.labels(*other_labels, "Canceled").inc()
    method.handled(grpc.StatusCode.INTERNAL).inc()
    handled.labels(*labels, "Internal").inc()

    # Errors: timed, and (a refusal) only counted; another component shares the histogram.
    ours.error("TASK_NOT_FOUND", 0.02)
    ours.error("TASK_NOT_FOUND", 7.0)
    ours.error("RATE_LIMIT_EXCEEDED")
    ServerMetrics(ours_registry, component="http").error("TASK_NOT_FOUND", 0.001)
    for error_type, component, seconds in (("TASK_NOT_FOUND", "grpc_server", 0.02),
                                           ("TASK_NOT_FOUND", "grpc_server", 7.0),
                                           ("RATE_LIMIT_EXCEEDED", "grpc_server", None),
                                           ("TASK_NOT_FOUND", "http", 0.001)):
        errors.labels(error_type, component).inc()
        child = error_duration.labels(error_type)
        if seconds is not None:
            child.observe(seconds)

    assert _exposition(ours_registry) == _exposition(theirs_registry)



def test_counts_from_many_threads_are_all_kept() -> None:
    """Concurrent calls on one method lose no count."""
    registry = CollectorRegistry()
    method = ServerMetrics(registry).for_method("unary", "a.S", "M")

    def calls() -> None:
        for _ in range(2000):
            method.start()
            method.succeed(0.002)

    threads = [threading.Thread(target=calls) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    labels = {"grpc_type": "unary", "grpc_service": "a.S", "grpc_method": "M"}
    assert registry.get_sample_value("grpc_server_started_total", labels) == 8000
    assert registry.get_sample_value("grpc_server_handled_total",
                                     {**labels, "grpc_code": "OK"}) == 8000
    assert registry.get_sample_value("grpc_server_handling_seconds_count", labels) == 8000
