"""Retry advice from a peer is clamped to [0, MAX_RETRY_AFTER]; invalid Durations are dropped."""

from __future__ import annotations

import random
from collections.abc import Iterator

import grpc
import httpx
import pytest
from fastapi import FastAPI
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc._proto.octollm.errors.v1 import errors_pb2
from octollm_grpc.client import aio as client_aio
from octollm_grpc.client import resilient_channel
from octollm_grpc.fastapi import install_error_handlers
from octollm_grpc.http import MAX_RETRY_AFTER_HEADER, to_http
from octollm_grpc.status._decode import from_status_proto
from octollm_grpc.status._limits import DETAILS_KEY, MAX_RETRY_AFTER, PUSHBACK_KEY
from tests.client.backend import UNARY, Backend, Reply
from tests.http.support import serve_app
from tests.servers import sync_server

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
INT64_MAX = 2**63 - 1

#: (seconds, nanos) -> retry_after decoded (None: dropped as an invalid Duration).
CASES = [
    ((30, 0), 30),
    ((1, 500_000_000), 1.5),
    ((0, 0), 0),
    ((-5, 0), 0),
    ((0, -500_000_000), 0),
    ((-2, -1), 0),
    ((315_576_000_000, 0), MAX_RETRY_AFTER),
    ((315_576_000_000, 999_999_999), MAX_RETRY_AFTER),
    ((315_576_000_001, 0), None),
    ((-315_576_000_001, 0), None),
    ((INT64_MAX, 0), None),
    ((10**15, 0), None),
    ((-2, 853_000_000), None),
    ((1, -5), None),
    ((0, 1_000_000_000), None),
    ((0, -1_000_000_000), None),
]


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _retry_info(seconds: int, nanos: int) -> any_pb2.Any:
    return _any(error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)))


def _envelope(seconds: int, nanos: int) -> any_pb2.Any:
    return _any(errors_pb2.ErrorEnvelope(
        error_code="RATE_LIMIT_EXCEEDED", message="slow down",
        retry_after=duration_pb2.Duration(seconds=seconds, nanos=nanos)))


def _status(*details: any_pb2.Any) -> status_pb2.Status:
    return status_pb2.Status(code=EXHAUSTED.value[0], message="slow down", details=details)


@pytest.mark.parametrize(("duration", "expected"), CASES)
def test_retry_info_is_clamped_or_dropped(duration: tuple[int, int],
                                          expected: float | None) -> None:
    """RetryInfo's delay: negative is 0, over the maximum is the maximum, invalid is none."""
    error = from_status_proto(_status(_retry_info(*duration)))
    assert error.retry_after == expected
    assert type(error.retry_after) is type(expected)


@pytest.mark.parametrize(("duration", "expected"), CASES)
def test_the_envelopes_retry_after_is_clamped_or_dropped(duration: tuple[int, int],
                                                         expected: float | None) -> None:
    """The envelope's retry_after follows the same rule as RetryInfo."""
    error = from_status_proto(_status(_envelope(*duration)))
    assert isinstance(error, errors.RateLimitError)
    assert error.retry_after == expected


def test_an_invalid_envelope_duration_leaves_retry_info_advice() -> None:
    """An invalid envelope retry_after is no advice: RetryInfo's valid one stays."""
    error = from_status_proto(_status(_retry_info(7, 0), _envelope(-2, 853_000_000)))
    assert error.retry_after == 7
    error = from_status_proto(_status(_retry_info(-2, 853_000_000), _envelope(9, 0)))
    assert error.retry_after == 9
    error = from_status_proto(_status(_retry_info(-2, 853_000_000)))
    assert error.retry_after is None


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[Backend, str]]:
    server = Backend([Reply(EXHAUSTED)])
    with sync_server([server.handler()]) as target:
        yield server, target


TRAILERS = {
    "retry_info": ((DETAILS_KEY, _status(_retry_info(INT64_MAX, 0)).SerializeToString()),),
    "envelope": ((DETAILS_KEY, _status(_envelope(10**15, 0)).SerializeToString()),),
    "huge": ((DETAILS_KEY, _status(_retry_info(315_576_000_000, 5)).SerializeToString()),),
    "pushback": ((PUSHBACK_KEY, "999999999999999"),),
}
EXPECTED = {"retry_info": None, "envelope": None, "huge": MAX_RETRY_AFTER,
            "pushback": MAX_RETRY_AFTER}


def _sync_error(target: str) -> errors.OctoLLMError:
    with resilient_channel(target, retry=None, budget=None, breaker=None,
                           registry=CollectorRegistry(), rng=random.Random(1)) as channel:
        with pytest.raises(errors.OctoLLMError) as caught:
            channel.unary_unary(UNARY)(b"x", timeout=10)
    return caught.value


async def _aio_error(target: str) -> errors.OctoLLMError:
    async with client_aio.resilient_channel(target, retry=None, budget=None, breaker=None,
                                            registry=CollectorRegistry()) as channel:
        with pytest.raises(errors.OctoLLMError) as caught:
            await channel.unary_unary(UNARY)(b"x", timeout=10)
    return caught.value


@pytest.mark.parametrize("kind", sorted(TRAILERS))
async def test_a_peers_advice_arrives_bounded_on_both_stacks(
        backend: tuple[Backend, str], kind: str) -> None:
    """Over real channels (sync and aio), absurd advice decodes clamped or dropped."""
    server, target = backend
    server.script = [Reply(EXHAUSTED, trailers=TRAILERS[kind], message="slow down")]
    for error in (_sync_error(target), await _aio_error(target)):
        assert error.code() is EXHAUSTED
        assert error.retry_after == EXPECTED[kind]
        headers = to_http(error).headers
        if EXPECTED[kind] is None:
            assert "Retry-After" not in headers
        else:
            assert headers["Retry-After"] == str(MAX_RETRY_AFTER_HEADER) == "86400"


def test_a_re_raised_peer_error_never_sends_an_absurd_retry_after(
        backend: tuple[Backend, str]) -> None:
    """install_error_handlers on a real uvicorn: Retry-After of a day at most, body clamped."""
    server, target = backend
    server.script = [Reply(EXHAUSTED, trailers=TRAILERS["huge"], message="slow down")]
    app = FastAPI()
    install_error_handlers(app, metrics=False)

    @app.get("/call")
    def call() -> None:
        raise _sync_error(target)

    with serve_app(app) as url:
        response = httpx.get(f"{url}/call", timeout=10)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "86400"
    assert response.json()["retry_after"] == MAX_RETRY_AFTER


@pytest.mark.parametrize(("retry_after", "header"), [
    (0, None), (-1, None), (0.001, "1"), (30, "30"), (30.2, "31"), (86_400, "86400"),
    (86_400.5, "86400"), (1e15, "86400"), (float("inf"), None), (float("nan"), None)])
def test_retry_after_header_bounds(retry_after: float, header: str | None) -> None:
    """Retry-After: whole seconds rounded up, none for 0 or less or non-finite, a day at most."""
    error = errors.RateLimitError(limit=1, window=60, retry_after=retry_after)
    assert to_http(error).headers.get("Retry-After") == header
