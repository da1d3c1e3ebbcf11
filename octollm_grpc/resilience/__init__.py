"""Resilience for any call, with the OctoLLM error-handling standard's names: circuit
breaker, retry, fallback, error metrics, transactions.

The same grpc-free core as the gRPC client's ([`octollm_grpc.client`][octollm_grpc.client]): one
breaker state
machine and its metrics, one backoff formula, one retry budget. ``@retry(...)`` decorates a
``def`` or an ``async def``; ``retry_with_backoff`` is the standard's call form.
See ``docs/resilience.md``.
"""

from __future__ import annotations

from octollm_grpc.observability._track_errors import track_errors
from octollm_grpc.resilience._breaker import CircuitBreaker, CircuitState
from octollm_grpc.resilience._fallback import with_fallback
from octollm_grpc.resilience._retry import retry, retry_with_backoff
from octollm_grpc.resilience._transaction import database_transaction

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "database_transaction",
    "retry",
    "retry_with_backoff",
    "track_errors",
    "with_fallback",
]
