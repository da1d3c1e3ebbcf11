"""gRPC's own size limits decode to a final, typed error: not the retryable quota refusal.

grpc core refuses a message over the receiver's maximum (4 MiB by default) or metadata over
its limit with a bare ``RESOURCE_EXHAUSTED`` and its own text. Resending the same call cannot
succeed, so the resilient channel raises ``ResourceExhaustedError`` with error_code
``MESSAGE_TOO_LARGE`` / ``METADATA_TOO_LARGE`` in our words, and ``resilience.retry`` does not
retry it (a real quota refusal still is). Real servers and channels, both stacks.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from octollm_grpc import errors, resilience
from octollm_grpc.client import aio as client_aio
from octollm_grpc.client import resilient_channel
from octollm_grpc.status import from_rpc_error
from tests.servers import aio_server, sync_server

SERVICE = "test.size.v1.Echo"
METHOD = f"/{SERVICE}/Echo"
BIG = b"x" * (4 * 1024 * 1024 + 100)
BIG_HEADER = (("x-big", "y" * 20_000),)


def _handlers(calls: list[int]) -> list[grpc.GenericRpcHandler]:
    def echo(request: bytes, context: Any) -> bytes:
        calls.append(len(request))
        return request if request != b"huge-reply" else BIG

    return [grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)})]


def _assert_too_large(error: BaseException, code: str, what: str) -> None:
    assert isinstance(error, errors.ResourceExhaustedError)
    assert error.error_code == code
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert what in error.message
    # Our words, not grpc core's ("SERVER: Received message larger than max (...)").
    assert "SERVER:" not in error.message and "vs." not in error.message
    assert error.details["size"] > error.details["limit"] > 0
    assert error.retry_after is None


CASES = [
    ("message", BIG, (), "MESSAGE_TOO_LARGE", "request message is larger than the server's"),
    ("metadata", b"small", BIG_HEADER, "METADATA_TOO_LARGE", "metadata is larger"),
    ("reply", b"huge-reply", (), "MESSAGE_TOO_LARGE",
     "response message is larger than this client's"),
]


@pytest.mark.parametrize(("case", "request_bytes", "metadata", "code", "what"), CASES,
                         ids=[c[0] for c in CASES])
def test_sync_size_refusal_is_final_and_typed(
    case: str, request_bytes: bytes, metadata: tuple[tuple[str, str], ...], code: str, what: str
) -> None:
    calls: list[int] = []
    sleeps: list[float] = []
    with sync_server(_handlers(calls)) as target, resilient_channel(target) as channel:
        echo = channel.unary_unary(METHOD)

        @resilience.retry(max_retries=3, base_delay=0.01, sleep=sleeps.append)
        def call() -> bytes:
            attempts.append(1)
            return echo(request_bytes, metadata=metadata, timeout=10)

        attempts: list[int] = []
        with capture_logs() as logs, pytest.raises(errors.ResourceExhaustedError) as raised:
            call()
    _assert_too_large(raised.value, code, what)
    assert attempts == [1] and sleeps == []  # resilience.retry did not retry it
    assert not [e for e in logs if e["event"].startswith("resilience.retry")]
    # The server's handler never ran for a refused request (the reply case ran it once).
    assert len(calls) == (1 if case == "reply" else 0)


@pytest.mark.parametrize(("case", "request_bytes", "metadata", "code", "what"), CASES,
                         ids=[c[0] for c in CASES])
async def test_aio_size_refusal_is_final_and_typed(
    case: str, request_bytes: bytes, metadata: tuple[tuple[str, str], ...], code: str, what: str
) -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    async with aio_server(_handlers(calls)) as target:
        async with client_aio.resilient_channel(target) as channel:
            echo = channel.unary_unary(METHOD)
            attempts: list[int] = []

            @resilience.retry(max_retries=3, base_delay=0.01, sleep=fake_sleep)
            async def call() -> bytes:
                attempts.append(1)
                return await echo(request_bytes, metadata=metadata, timeout=10)

            with capture_logs() as logs, pytest.raises(errors.ResourceExhaustedError) as raised:
                await call()
    _assert_too_large(raised.value, code, what)
    assert attempts == [1] and sleeps == []
    assert not [e for e in logs if e["event"].startswith("resilience.retry")]
    assert len(calls) == (1 if case == "reply" else 0)


def test_a_quota_refusal_is_still_retried() -> None:
    """The exception is narrow: a service's own bare RESOURCE_EXHAUSTED stays retryable."""

    def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota of the day is spent")

    handlers = [grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(refuse)})]
    sleeps: list[float] = []
    attempts: list[int] = []
    with sync_server(handlers) as target, resilient_channel(target) as channel:
        echo = channel.unary_unary(METHOD)

        @resilience.retry(max_retries=2, base_delay=0.01, jitter=False, sleep=sleeps.append)
        def call() -> bytes:
            attempts.append(1)
            return echo(b"x", timeout=10)

        with pytest.raises(errors.ResourceExhaustedError) as raised:
            call()
    assert raised.value.error_code == "RESOURCE_EXHAUSTED"
    assert raised.value.message == "quota of the day is spent"
    assert len(attempts) == 3 and len(sleeps) == 2


def test_the_refusal_keeps_its_class_when_a_server_relays_it() -> None:
    """Re-raised by a handler behind our interceptors, it reaches the next client as itself."""
    from octollm_grpc.server import server_interceptors

    refused = errors.ResourceExhaustedError("x")
    with sync_server(_handlers([])) as inner, resilient_channel(inner) as inner_channel:
        inner_echo = inner_channel.unary_unary(METHOD)

        def relay(request: bytes, context: Any) -> bytes:
            return inner_echo(BIG, timeout=10)

        handlers = [grpc.method_handlers_generic_handler(
            "test.size.v1.Relay", {"Relay": grpc.unary_unary_rpc_method_handler(relay)})]
        with sync_server(handlers, interceptors=server_interceptors()) as outer, \
                grpc.insecure_channel(outer) as plain:
            try:
                plain.unary_unary("/test.size.v1.Relay/Relay")(b"go", timeout=10)
            except grpc.RpcError as error:
                refused = from_rpc_error(error)
    _assert_too_large(refused, "MESSAGE_TOO_LARGE", "request message is larger")


def test_decoder_reads_each_of_grpc_cores_texts() -> None:
    """The texts grpc core writes (client and server side, soft and hard metadata limits)."""

    class Failed:
        def __init__(self, text: str) -> None:
            self._text = text

        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.RESOURCE_EXHAUSTED

        def details(self) -> str:
            return self._text

        def trailing_metadata(self) -> tuple[()]:
            return ()

    cases = {
        "SERVER: Received message larger than max (10000005 vs. 4194304)":
            ("MESSAGE_TOO_LARGE", 10000005, 4194304, "request"),
        "CLIENT: Received message larger than max (5242880 vs. 4194304)":
            ("MESSAGE_TOO_LARGE", 5242880, 4194304, "response"),
        "Stream removed (CLIENT: Received message larger than max (4194404 vs. 4194304))":
            ("MESSAGE_TOO_LARGE", 4194404, 4194304, "response"),
        "Sent message larger than max (300 vs. 200)": ("MESSAGE_TOO_LARGE", 300, 200, "message"),
        "received metadata size exceeds hard limit (value length 20000 vs. 16384)":
            ("METADATA_TOO_LARGE", 20000, 16384, "metadata"),
        "received metadata size exceeds soft limit (9000 vs. 8192), rejecting requests with "
        "some random probability": ("METADATA_TOO_LARGE", 9000, 8192, "metadata"),
    }
    sent = from_rpc_error(Failed("Sent message larger than max (300 vs. 200)"))
    assert sent.message == "The message is larger than the receiver's limit (300 > 200 bytes)"
    for text, (code, size, limit, word) in cases.items():
        error = from_rpc_error(Failed(text))
        assert (error.error_code, error.details["size"], error.details["limit"]) == (
            code, size, limit), text
        assert word in error.message and text not in error.message
    # Anything else stays the plain, retryable ResourceExhaustedError with its own text.
    for text in ("quota spent", "Received message larger than max (a vs. b)", ""):
        error = from_rpc_error(Failed(text))
        assert type(error) is errors.ResourceExhaustedError and error.message == text

