"""The seed's resilience for any call: circuit breaker, retry, fallback, metrics, transactions.

The same core as the gRPC client's (:mod:`octollm_grpc.client`): one breaker state machine
and its metrics, one backoff formula, one retry budget. See ``docs/resilience.md``.
"""

from __future__ import annotations

from octollm_grpc.observability._track_errors import track_errors
from octollm_grpc.resilience._breaker import CircuitBreaker, CircuitState, breaker_of
from octollm_grpc.resilience._fallback import with_fallback
from octollm_grpc.resilience._retry import retry, retry_sync, retry_with_backoff
from octollm_grpc.resilience._transaction import database_transaction

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "breaker_of",
    "database_transaction",
    "retry",
    "retry_sync",
    "retry_with_backoff",
    "track_errors",
    "with_fallback",
]
