"""Server interceptors: every handler exception reaches the caller as the right status.

``server_interceptors()`` gives the recommended stack for ``grpc.server(...)``; its twin in
[`octollm_grpc.server.aio`][octollm_grpc.server.aio] is for ``grpc.aio.server(...)``. Each part is
configured by
its own object: [`RequestIds`][octollm_grpc.server.RequestIds],
[`CallLogger`][octollm_grpc.server.CallLogger],
[`ServerMetrics`][octollm_grpc.server.ServerMetrics],
[`RateLimiter`][octollm_grpc.server.RateLimiter] (with [`RateLimit`][octollm_grpc.server.RateLimit];
its buckets in a `MemoryStore`, or
shared by replicas in ``ratelimit_redis.RedisStore``),
[`BearerAuth`][octollm_grpc.server.BearerAuth] (with
[`StaticTokens`][octollm_grpc.server.StaticTokens] or
[`JWTVerifier`][octollm_grpc.server.JWTVerifier]) or
[`CertificateAuth`][octollm_grpc.server.CertificateAuth] (mTLS identities),
[`ConcurrencyLimit`][octollm_grpc.server.ConcurrencyLimit] (an adaptive limit on calls in flight),
all gathered in one
[`ServerOptions`][octollm_grpc.server.ServerOptions].
[`server_credentials`][octollm_grpc.server.server_credentials] gives TLS / mTLS credentials
(reloaded
from disk when the files change);
[`certificate_principal`][octollm_grpc.server.certificate_principal] names an mTLS caller; a
verifier may answer with a [`Grant`][octollm_grpc.server.Grant] (scopes and the caller's principal).
Handlers
validate with [`Violations`][octollm_grpc.server.Violations] and read the call's id with
[`current_request_id`][octollm_grpc.server.current_request_id].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Unpack

import grpc

from octollm_grpc.observability import (
    CallLogger,
    RequestIds,
    ServerMetrics,
    configure_logging,
    current_request_id,
    flush_logs,
    serve_metrics,
)
from octollm_grpc.server._auth import BearerAuth, Grant, StaticTokens
from octollm_grpc.server._concurrency import ConcurrencyLimit
from octollm_grpc.server._core import Pipeline
from octollm_grpc.server._identity import CertificateAuth, certificate_principal
from octollm_grpc.server._options import ServerKeywords, ServerOptions, options_of
from octollm_grpc.server._ratelimit import RateLimit, RateLimiter
from octollm_grpc.server._sync import ServerInterceptor
from octollm_grpc.server._tls import server_credentials
from octollm_grpc.server._validation import Violations

# The observability parts are also importable from here, where a server is configured.
if TYPE_CHECKING:
    from octollm_grpc.server._jwt import JWTVerifier


def __getattr__(name: str) -> Any:
    # JWTVerifier is loaded on first use: its module brings PyJWT, cryptography and urllib,
    # which every server would otherwise carry (and its garbage collector traverse: the aio
    # error path cost 170k more instructions per call with them loaded).
    if name == "JWTVerifier":
        from octollm_grpc.server._jwt import JWTVerifier

        return JWTVerifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BearerAuth",
    "CallLogger",
    "CertificateAuth",
    "ConcurrencyLimit",
    "Grant",
    "JWTVerifier",
    "RateLimit",
    "RateLimiter",
    "RequestIds",
    "ServerMetrics",
    "ServerOptions",
    "StaticTokens",
    "Violations",
    "certificate_principal",
    "configure_logging",
    "current_request_id",
    "flush_logs",
    "serve_metrics",
    "server_credentials",
    "server_interceptors",
]


def server_interceptors(
    options: ServerOptions | None = None, **keywords: Unpack[ServerKeywords]
) -> list[grpc.ServerInterceptor]:
    """The recommended stack for ``grpc.server(pool, interceptors=...)``.

    Takes the fields of [`ServerOptions`][octollm_grpc.server.ServerOptions] as keywords
    (``request_ids``, ``logger``,
    ``metrics``, ``rate_limit``, ``auth``, ``concurrency``, ``domain``, ``debug``,
    ``tracer_provider``), or a
    ``ServerOptions`` whose fields the keywords replace. With no arguments: error mapping,
    request ids, logging and metrics (on prometheus-client's default registry). ``True``
    keeps a part with its defaults, ``False`` drops it, an object configures it;
    ``rate_limit``, ``auth`` and ``concurrency`` are off unless given. Error mapping is always
    on. The parts run as one interceptor (one wrapper per call, not one per part), in this
    order: request id, started counter, rate limit, concurrency limit, auth, handler; then
    the status is decided, logged once and counted. ``domain`` is ``ErrorInfo.domain``;
    ``debug=True`` adds the traceback of unexpected exceptions as ``DebugInfo`` (never in
    production). ``tracer_provider``
    (OpenTelemetry; default: the global one) starts a server span for a call no
    instrumentation traces already (see `octollm_grpc.observability._otel`).

    Raises ``TypeError`` for an unknown keyword, and for an ``auth`` whose verifier is a
    coroutine function: a sync server cannot await it, so it is refused here rather than
    failing every call.

    Args:
        options: A [`ServerOptions`][octollm_grpc.server.ServerOptions]; keywords replace its
            fields.
        **keywords: The fields of [`ServerOptions`][octollm_grpc.server.ServerOptions].

    Returns:
        The interceptors for ``grpc.server(pool, interceptors=...)``.

    Raises:
        TypeError: An unknown keyword, or a coroutine ``auth`` verifier.
    """
    settled = options_of(options, keywords)
    if settled.auth is not None and settled.auth.is_async:
        raise TypeError(
            "BearerAuth with a coroutine verifier needs the grpc.aio stack "
            "(octollm_grpc.server.aio.server_interceptors); pass a plain function here")
    return [ServerInterceptor(Pipeline(settled))]
