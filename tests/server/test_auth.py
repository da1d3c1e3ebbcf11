"""Bearer-token auth: no token, wrong token, token without scope, token with scope, open methods."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from octollm_grpc import errors as e
from octollm_grpc.server import (
    BearerAuth,
    RateLimit,
    RateLimiter,
    StaticTokens,
    server_interceptors,
)
from octollm_grpc.server import _auth as auth_module
from octollm_grpc.server import aio as server_aio
from octollm_grpc.status import from_rpc_error
from octollm_grpc.testing import FakeClock
from tests.server.harness import SHAPES, Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server

READER = "tok-reader-5f2c9a"
WRITER = "tok-writer-81d07e"
TOKENS = StaticTokens({READER: ["tasks.read"], WRITER: ["tasks.read", "tasks.write"]})
SCOPES = {"/test.Shapes/": ["tasks.read"], "/test.Shapes/ClientStream": ["tasks.write"]}

Case = tuple[str, list[tuple[str, str]], str, grpc.StatusCode, type[e.OctoLLMError] | None]
# (name, metadata, shape, expected code, expected class or None for success)
CASES: list[Case] = [
    ("no_token", [], "unary", grpc.StatusCode.UNAUTHENTICATED, e.AuthenticationError),
    ("wrong_token", [("authorization", "Bearer tok-reader-5f2c9b")], "unary",
     grpc.StatusCode.UNAUTHENTICATED, e.AuthenticationError),
    ("not_bearer", [("authorization", f"Basic {READER}")], "unary",
     grpc.StatusCode.UNAUTHENTICATED, e.AuthenticationError),
    ("missing_scope", [("authorization", f"Bearer {READER}")], "client_stream",
     grpc.StatusCode.PERMISSION_DENIED, e.AuthorizationError),
    ("with_scope", [("authorization", f"Bearer {WRITER}")], "client_stream",
     grpc.StatusCode.OK, None),
    ("service_scope", [("authorization", f"bearer {READER}")], "bidi_stream",
     grpc.StatusCode.OK, None),
]
IDS = [c[0] for c in CASES]


def _check(case: tuple[Any, ...], outcome: Any, logs: list[dict[str, Any]]) -> None:
    _, _, _, code, cls = case
    if cls is None:
        assert outcome.error is None
        assert outcome.messages[-1] == b"done"
        assert logs == []
        return
    assert outcome.error is not None
    assert outcome.error.code() is code
    decoded = from_rpc_error(outcome.error)
    assert type(decoded) is cls
    assert [x["log_level"] for x in logs] == ["warning"]
    # Tokens never leave the server in errors and never reach the logs.
    seen = repr((outcome.error.details(), outcome.trailers, logs))
    assert READER not in seen and WRITER not in seen and "5f2c9b" not in seen


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sync_auth(case: tuple[Any, ...]) -> None:
    """Sync: each token case gets its status; tokens appear in no error and no log."""
    _, metadata, shape, _, _ = case
    auth = BearerAuth(TOKENS, scopes=SCOPES)
    with capture_logs() as logs, sync_server(
            sync_handlers(Script()), server_interceptors(metrics=False, auth=auth)) as target:
        outcome = call_sync(target, shape, metadata)
    _check(case, outcome, logs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_aio_auth_with_async_verifier(case: tuple[Any, ...]) -> None:
    """aio: the same cases with a coroutine verifier."""
    _, metadata, shape, _, _ = case

    async def verify(token: str) -> Iterable[str] | None:
        return TOKENS(token)

    auth = BearerAuth(verify, scopes=SCOPES)
    with capture_logs() as logs:
        async with aio_server(aio_handlers(Script()),
                              server_aio.server_interceptors(metrics=False, auth=auth)) as target:
            outcome = await call_aio(target, shape, metadata)
    _check(case, outcome, logs)


def test_health_stays_open() -> None:
    """The health service answers without a token while other methods require one."""
    servicer = health.HealthServicer()
    health_handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(
            servicer.Check,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString)})
    auth = BearerAuth(TOKENS, default_scopes=["tasks.read"])
    with sync_server([health_handler, *sync_handlers(Script())],
                     server_interceptors(metrics=False, auth=auth)) as target:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        closed = call_sync(target, "unary")
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert closed.error is not None
    assert closed.error.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def test_requirements_resolve_most_specific_first() -> None:
    """Method entry beats service prefix beats default; open methods need nothing."""
    auth = BearerAuth(TOKENS, scopes=SCOPES, default_scopes=["base"],
                      open_methods=["/test.Open/Ping", "/test.Public/"])
    assert auth.requirement("/test.Shapes/ClientStream") == {"tasks.write"}
    assert auth.requirement("/test.Shapes/Unary") == {"tasks.read"}
    assert auth.requirement("/other.Svc/M") == {"base"}
    assert auth.requirement("/test.Open/Ping") is None
    assert auth.requirement("/test.Open/Other") == {"base"}
    assert auth.requirement("/test.Public/Any") is None


def test_static_tokens_compare_every_token_in_constant_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """StaticTokens compares with hmac.compare_digest against every token, match or not."""
    calls: list[tuple[bytes, bytes]] = []
    real = auth_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    tokens = StaticTokens({"a-token": ["x"], "b-token": ["y"], "c-token": []})
    assert tokens("a-token") == {"x"}
    assert len(calls) == 3
    assert tokens("nope") is None
    assert len(calls) == 6
    assert "a-token" not in repr(tokens)


def test_sync_stack_rejects_an_async_verifier() -> None:
    """A coroutine verifier on the sync stack is a configuration bug: TypeError, not a pass."""

    async def verify(token: str) -> list[str]:
        return ["x"]

    auth = BearerAuth(verify)
    with pytest.raises(TypeError):
        auth.check(frozenset(), [("authorization", "Bearer t")])


def test_rate_limit_runs_before_auth() -> None:
    """An over-limit caller is rejected before its token is checked (slows token guessing)."""
    checked: list[str] = []

    def verify(token: str) -> list[str] | None:
        checked.append(token)
        return None

    limiter = RateLimiter(RateLimit(limit=1, burst=1), clock=FakeClock().now)
    interceptors = server_interceptors(metrics=False, auth=BearerAuth(verify), rate_limit=limiter)
    md = [("authorization", "Bearer guess")]
    with sync_server(sync_handlers(Script()), interceptors) as target:
        first = call_sync(target, "unary", md)
        second = call_sync(target, "unary", md)
    assert first.error is not None and second.error is not None
    assert first.error.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert second.error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert checked == ["guess"]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_is_guarded(shape: str) -> None:
    """Auth applies to all four shapes, streaming ones included."""
    with sync_server(sync_handlers(Script(messages=2)), server_interceptors(
            metrics=False, auth=BearerAuth(TOKENS))) as target:
        outcome = call_sync(target, shape)
    assert outcome.messages == []
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
