"""Observability: request ids, call logging and metrics, shared by ``server``, ``client`` and
``fastapi``.

- [`RequestIds`][octollm_grpc.server.RequestIds] reads or makes each call's ``x-request-id``;
  handlers read it with
  [`current_request_id`][octollm_grpc.server.current_request_id].
- [`CallLogger`][octollm_grpc.server.CallLogger] logs one structured event per finished call;
  [`configure_logging`][octollm_grpc.server.configure_logging]
  sets up structlog for it and [`flush_logs`][octollm_grpc.server.flush_logs] drains the log queue.
- [`ServerMetrics`][octollm_grpc.server.ServerMetrics] holds the ``grpc_server_*`` and
  ``octollm_errors_*`` families;
  [`serve_metrics`][octollm_grpc.server.serve_metrics] exposes a registry over HTTP.

Deadline and request-id propagation to outgoing calls, OpenTelemetry spans and the client's
metrics are private modules here (``_propagation``, ``_otel``, ``_client_metrics``): a
resilient channel and the server stack install them.
"""

from __future__ import annotations

from octollm_grpc.observability._logs import CallLogger, configure_logging, flush_logs
from octollm_grpc.observability._requestid import RequestIds, current_request_id
from octollm_grpc.observability._server_metrics import ServerMetrics, serve_metrics

__all__ = [
    "CallLogger",
    "RequestIds",
    "ServerMetrics",
    "configure_logging",
    "current_request_id",
    "flush_logs",
    "serve_metrics",
]
