"""A handler's own ``grpc-retry-pushback-ms`` survives the status our stack sends for its error.

gRFC A6: a negative pushback means "do not retry". A handler that has already retried its own
downstream sets it and raises; our status must carry it, unless the error brings retry advice
of its own (then ours wins, so the client reads one consistent set).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from octollm_grpc import errors as e
from octollm_grpc.client import RetryPolicy
from octollm_grpc.client import resilient_channel as sync_channel
from octollm_grpc.client.aio import resilient_channel as aio_channel
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._limits import PUSHBACK_KEY
from tests.server.harness import (
    SHAPES,
    Script,
    aio_handlers,
    call_aio,
    call_sync,
    path,
    sync_handlers,
)
from tests.servers import aio_server, sync_server


def _do_not_retry(context: Any) -> None:
    context.set_trailing_metadata(((PUSHBACK_KEY, "-1"),))


def _unavailable() -> BaseException:
    return e.ArmUnavailableError(["llm.complete"])


@pytest.mark.parametrize("shape", SHAPES)
def test_sync_handler_pushback_survives_our_status(shape: str) -> None:
    """Sync: the handler's "-1" reaches the client with the rich status of its error."""
    script = Script(before=_do_not_retry, error=_unavailable)
    with sync_server(sync_handlers(script), server_interceptors(metrics=False)) as target:
        outcome = call_sync(target, shape)
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert outcome.trailers[PUSHBACK_KEY] == "-1"
    assert isinstance(from_rpc_error(outcome.error), e.ArmUnavailableError)


@pytest.mark.parametrize("shape", SHAPES)
async def test_aio_handler_pushback_survives_our_status(shape: str) -> None:
    """aio: the same."""
    script = Script(before=_do_not_retry, error=_unavailable)
    async with aio_server(aio_handlers(script),
                          server_aio.server_interceptors(metrics=False)) as target:
        outcome = await call_aio(target, shape)
    assert outcome.error is not None
    assert outcome.trailers[PUSHBACK_KEY] == "-1"
    assert isinstance(from_rpc_error(outcome.error), e.ArmUnavailableError)


def test_error_with_retry_advice_replaces_the_handlers_pushback() -> None:
    """An error with retry_after sends its own pushback: one consistent value, not two."""
    script = Script(before=_do_not_retry,
                    error=lambda: e.RateLimitError(limit=1, window=60, retry_after=7))
    with sync_server(sync_handlers(script), server_interceptors(metrics=False)) as target:
        outcome = call_sync(target, "unary")
    assert outcome.trailers[PUSHBACK_KEY] == "7000"


def _counting(calls: list[int]) -> Script:
    def before(context: Any) -> None:
        calls.append(1)
        _do_not_retry(context)

    return Script(before=before, error=_unavailable)


_POLICY = RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.001)


def test_sync_resilient_channel_does_not_retry_after_the_handlers_minus_one() -> None:
    """End to end, sync: a retryable UNAVAILABLE carrying the handler's "-1" is tried once."""
    calls: list[int] = []
    with sync_server(sync_handlers(_counting(calls)),
                     server_interceptors(metrics=False)) as target:
        with sync_channel(target, retry=_POLICY, breaker=None, budget=None) as channel:
            with pytest.raises(e.ArmUnavailableError):
                channel.unary_unary(path("unary"))(b"req", timeout=5)
    assert len(calls) == 1


async def test_aio_resilient_channel_does_not_retry_after_the_handlers_minus_one() -> None:
    """End to end, aio: the same."""
    calls: list[int] = []
    async with aio_server(aio_handlers(_counting(calls)),
                          server_aio.server_interceptors(metrics=False)) as target:
        async with aio_channel(target, retry=_POLICY, breaker=None, budget=None) as channel:
            with pytest.raises(e.ArmUnavailableError):
                await channel.unary_unary(path("unary"))(b"req", timeout=5)
    assert len(calls) == 1
