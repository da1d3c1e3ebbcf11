"""Server interceptors: every handler exception reaches the caller as the right status.

``server_interceptors()`` gives the recommended stack for ``grpc.server(...)``; its twin in
:mod:`octollm_grpc.server.aio` is for ``grpc.aio.server(...)``. Each part is configured by
its own object: :class:`RequestIds`, :class:`CallLogger`, :class:`ServerMetrics`,
:class:`RateLimiter` (with :class:`RateLimit`; its buckets in a :class:`MemoryStore`, or
shared by replicas in ``ratelimit_redis.RedisStore``), :class:`BearerAuth` (with
:class:`StaticTokens`). Handlers validate with :class:`Violations` and read the call's id with
:func:`current_request_id`.
"""

from __future__ import annotations

from typing import Any

import grpc

from octollm_grpc.server._core import Pipeline
from octollm_grpc.server._sync import ServerInterceptor
from octollm_grpc.server.auth import DEFAULT_OPEN_METHODS, BearerAuth, StaticTokens
from octollm_grpc.server.logs import (
    FAILED_EVENT,
    CallLogger,
    LineWriter,
    configure_logging,
    flush_logs,
)
from octollm_grpc.server.metrics import ServerMetrics, serve_metrics
from octollm_grpc.server.ratelimit import BucketStore, MemoryStore, RateLimit, RateLimiter
from octollm_grpc.server.requestid import RequestIds, current_request_id
from octollm_grpc.server.validation import Violations
from octollm_grpc.status import DEFAULT_DOMAIN

__all__ = [
    "DEFAULT_OPEN_METHODS",
    "FAILED_EVENT",
    "BearerAuth",
    "BucketStore",
    "CallLogger",
    "LineWriter",
    "MemoryStore",
    "RateLimit",
    "RateLimiter",
    "RequestIds",
    "ServerInterceptor",
    "ServerMetrics",
    "StaticTokens",
    "Violations",
    "configure_logging",
    "current_request_id",
    "flush_logs",
    "serve_metrics",
    "server_interceptors",
]


def server_interceptors(
    *,
    request_ids: RequestIds | bool = True,
    logger: CallLogger | bool = True,
    metrics: ServerMetrics | bool = True,
    rate_limit: RateLimiter | None = None,
    auth: BearerAuth | None = None,
    domain: str = DEFAULT_DOMAIN,
    debug: bool = False,
    tracer_provider: Any = None,
) -> list[grpc.ServerInterceptor]:
    """The recommended stack for ``grpc.server(pool, interceptors=...)``.

    With no arguments: error mapping, request ids, logging and metrics (on prometheus-client's
    default registry). ``True`` keeps a part with its defaults, ``False`` drops it, an object
    configures it; ``rate_limit`` and ``auth`` are off unless given. Error mapping is always
    on. The parts run as one interceptor (one wrapper per call, not one per part), in this
    order: request id, started counter, rate limit, auth, handler; then the status is
    decided, logged once and counted. ``domain`` is ``ErrorInfo.domain``; ``debug=True`` adds
    the traceback of unexpected exceptions as ``DebugInfo`` (never in production).

    Raises ``TypeError`` for an ``auth`` whose verifier is a coroutine function: a sync server
    cannot await it, so it is refused here rather than failing every call.
    ``tracer_provider`` (OpenTelemetry; default: the global one) starts a server span for a
    call no instrumentation traces already (see :mod:`octollm_grpc.otel`).
    """
    if auth is not None and auth.is_async:
        raise TypeError(
            "BearerAuth with a coroutine verifier needs the grpc.aio stack "
            "(octollm_grpc.server.aio.server_interceptors); pass a plain function here")
    return [ServerInterceptor(Pipeline.from_options(
        request_ids=request_ids, logger=logger, metrics=metrics, rate_limit=rate_limit,
        auth=auth, domain=domain, debug=debug, tracer_provider=tracer_provider,
    ))]
