"""What a server stack is made of: one frozen [`ServerOptions`][octollm_grpc.server.ServerOptions],
for both stacks.

``server_interceptors(...)`` (sync and aio) takes the same keywords, typed by
`ServerKeywords`, or a ready [`ServerOptions`][octollm_grpc.server.ServerOptions] (the keywords then
replace its
fields). One options value can build a sync stack and an aio one alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

from octollm_grpc.observability._logs import CallLogger
from octollm_grpc.observability._requestid import RequestIds
from octollm_grpc.observability._server_metrics import ServerMetrics
from octollm_grpc.server._auth import BearerAuth
from octollm_grpc.server._concurrency import ConcurrencyLimit
from octollm_grpc.server._ratelimit import RateLimiter
from octollm_grpc.status._limits import DEFAULT_DOMAIN

__all__ = ["ServerKeywords", "ServerOptions", "options_of", "part"]


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """The parts of a server stack and how each is configured (frozen; compare with ``==``).

    For ``request_ids``, ``logger`` and ``metrics``: ``True`` keeps the part with its defaults
    (made when a stack is built, so each stack gets its own), ``False`` drops it, an object
    configures it. ``rate_limit``, ``auth`` and ``concurrency`` are off unless given. Error
    mapping is always on. The defaults are what ``server_interceptors()`` gives with no
    arguments.

    Args:
        request_ids: The request-id part (``True``: defaults, ``False``: off).
        logger: The call logger.
        metrics: The metrics.
        rate_limit: A [`RateLimiter`][octollm_grpc.server.RateLimiter], or ``None`` for none.
        auth: A [`BearerAuth`][octollm_grpc.server.BearerAuth], or ``None`` for none.
        concurrency: A [`ConcurrencyLimit`][octollm_grpc.server.ConcurrencyLimit], or ``None`` for
            none.
        domain: ``ErrorInfo.domain`` of the statuses sent.
        debug: Send the traceback of unexpected exceptions (never in production).
        tracer_provider: The OpenTelemetry tracer provider (default: the global one).
    """

    request_ids: RequestIds | bool = True
    """The request id each call gets (read from ``x-request-id`` or made), set as a trailer."""
    logger: CallLogger | bool = True
    """One structlog event per failed call."""
    metrics: ServerMetrics | bool = True
    """Prometheus metrics, on prometheus-client's default registry unless configured."""
    rate_limit: RateLimiter | None = None
    """Token buckets per caller; a refused call gets ``RateLimitError``."""
    auth: BearerAuth | None = None
    """Bearer tokens and scopes per method."""
    concurrency: ConcurrencyLimit | None = None
    """An adaptive limit on calls in flight; a call over it is refused before its handler."""
    domain: str = DEFAULT_DOMAIN
    """``ErrorInfo.domain`` of every error the stack encodes."""
    debug: bool = False
    """Adds the traceback of unexpected exceptions as ``DebugInfo`` (never in production)."""
    tracer_provider: Any = None
    """OpenTelemetry tracer provider for the stack's own server span (default: the global one)."""


class ServerKeywords(TypedDict, total=False):
    """The keywords of ``server_interceptors(...)``: the fields of
    [`ServerOptions`][octollm_grpc.server.ServerOptions].

    Typed here so that type checkers check callers' keywords (``**keywords: Unpack[...]``);
    the defaults and their meaning are [`ServerOptions`][octollm_grpc.server.ServerOptions]'.
    """

    request_ids: RequestIds | bool
    logger: CallLogger | bool
    metrics: ServerMetrics | bool
    rate_limit: RateLimiter | None
    auth: BearerAuth | None
    concurrency: ConcurrencyLimit | None
    domain: str
    debug: bool
    tracer_provider: Any


def options_of(options: ServerOptions | None, keywords: ServerKeywords) -> ServerOptions:
    """``options`` (default: [`ServerOptions`][octollm_grpc.server.ServerOptions]'s defaults) with
    ``keywords`` replacing
    its fields. Raises ``TypeError`` for an unknown keyword or an ``options`` of another type."""
    if options is None:
        return ServerOptions(**keywords)
    if not isinstance(options, ServerOptions):
        raise TypeError(f"options must be a ServerOptions, not {type(options).__name__}")
    return dataclasses.replace(options, **keywords) if keywords else options


_P = TypeVar("_P")


def part(value: _P | bool, default: Callable[[], _P]) -> _P | None:
    """A part as an option gives it: ``True`` -> ``default()``, ``False`` -> none, anything
    else is the part itself."""
    if value is True:
        return default()
    if value is False:
        return None
    return value
