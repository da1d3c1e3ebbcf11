"""Auth on every RPC of the sample service: missing, malformed, wrong and expired tokens, scopes.

Two setups. The real ``python -m server --auth-token`` (static token) in a subprocess at debug
log level: every RPC rejects every bad header with UNAUTHENTICATED, health stays open, and no
token (good or bad) is ever in its log or on the wire. And the same ``TaskServicer`` in-process
behind ``BearerAuth`` with per-method scopes and a verifier whose tokens expire (on a fake
clock): scopes are enforced method by method and an expired token is UNAUTHENTICATED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

import grpc
import pytest
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.server import BearerAuth
from octollm_grpc.server.aio import server_interceptors
from octollm_grpc.status import from_rpc_error
from octollm_grpc.testing import FakeClock
from server.gen.octollm.arms.v1 import arms_pb2
from server.gen.octollm.tasks.v1 import tasks_pb2_grpc
from server.service import TaskServicer
from server.store import TaskStore
from tests.reliability.support import SERVICE, health_ok, service
from tests.reliability.test_leaks import RPCS
from tests.service.harness import RunningService

TOKEN = "tok-Zq81-secret-value"
BAD_HEADERS: dict[str, list[tuple[str, str]]] = {
    "missing": [],
    "empty": [("authorization", "")],
    "scheme_only": [("authorization", "Bearer")],
    "scheme_and_spaces": [("authorization", "Bearer    ")],
    "basic_scheme": [("authorization", f"Basic {TOKEN}")],
    "no_scheme": [("authorization", TOKEN)],
    "wrong": [("authorization", "Bearer tok-Zq81-secret-valuf")],
    "prefix": [("authorization", f"Bearer {TOKEN[:-1]}")],
    "longer": [("authorization", f"Bearer {TOKEN}x")],
    "huge": [("authorization", "Bearer " + "A" * 4000)],
    "token_twice": [("authorization", f"Bearer {TOKEN} {TOKEN}")],
}
#: Token-like text that must never be logged (the huge one is checked by its prefix).
SECRETS = (TOKEN, "tok-Zq81-secret-valuf", TOKEN[:-1], "A" * 64)


def _call(channel: grpc.Channel, rpc: str, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    request, response_type, streaming = RPCS[rpc]
    method = f"/{SERVICE}/{rpc}"
    encode = type(request).SerializeToString
    try:
        if streaming:
            list(channel.unary_stream(method, request_serializer=encode,
                                      response_deserializer=response_type.FromString)(
                request, timeout=10, metadata=metadata))
        else:
            channel.unary_unary(method, request_serializer=encode,
                                response_deserializer=response_type.FromString)(
                request, timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        decoded = from_rpc_error(error)
        wire = f"{decoded.details()} {decoded.trailing_metadata()}"
        assert not any(s in wire for s in SECRETS), wire
        if decoded.code() is grpc.StatusCode.UNAUTHENTICATED:
            assert isinstance(decoded, errors.AuthenticationError)
        return decoded.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with service(tmp_path_factory.mktemp("auth"), "--auth-token", TOKEN,
                 "--log-level", "debug") as running:
        yield running


def test_every_rpc_rejects_every_bad_token(guarded: RunningService) -> None:
    """8 RPCs x 11 bad headers: all UNAUTHENTICATED (AuthenticationError); the token passes."""
    with grpc.insecure_channel(guarded.target) as channel:
        outcomes = {(rpc, name): _call(channel, rpc, headers)
                    for rpc in RPCS for name, headers in BAD_HEADERS.items()}
        good = {rpc: _call(channel, rpc, [("authorization", f"Bearer {TOKEN}")])
                for rpc in RPCS}
    wrong = {k: v for k, v in outcomes.items() if v is not grpc.StatusCode.UNAUTHENTICATED}
    assert wrong == {}
    # The right token gets through to the handlers (which answer for themselves).
    assert all(code is not grpc.StatusCode.UNAUTHENTICATED for code in good.values()), good
    assert good["ListTasks"] is grpc.StatusCode.OK
    assert health_ok(guarded.target)  # open without a token


def test_tokens_never_in_the_service_log(guarded: RunningService) -> None:
    """After good and bad tokens at debug level, the log holds no token text at all."""
    with grpc.insecure_channel(guarded.target) as channel:
        for headers in BAD_HEADERS.values():
            _call(channel, "ListTasks", headers)
        _call(channel, "CreateTask", [("authorization", f"Bearer {TOKEN}")])
    logs = guarded.logs()
    assert "AUTHENTICATION_ERROR" in logs  # the rejections were logged...
    assert not [s for s in SECRETS if s in logs]  # ...without the tokens
    assert "Zq81" not in logs  # nor any part of one


class ExpiringTokens:
    """A verifier whose tokens carry scopes and an expiry time (seconds on ``clock``)."""

    def __init__(self, tokens: dict[str, tuple[Iterable[str], float]], clock: FakeClock) -> None:
        self._tokens = tokens
        self._clock = clock

    def __call__(self, token: str) -> Iterable[str] | None:
        entry = self._tokens.get(token)
        if entry is None or self._clock.now() >= entry[1]:
            return None
        return entry[0]


class _Arm:
    async def complete(self, task_id: str, prompt: str, priority: int,
                       timeout: float) -> arms_pb2.CompleteResponse:
        return arms_pb2.CompleteResponse(text="done", arm_id="test-arm", tokens=1)


PREFIX = f"/{SERVICE}/"
SCOPES = {
    PREFIX: ["tasks.read"],  # GetTask, ListTasks, WatchTask
    f"{PREFIX}CreateTask": ["tasks.write"],
    f"{PREFIX}CancelTask": ["tasks.write"],
    f"{PREFIX}DeleteTask": ["tasks.write"],
    f"{PREFIX}ExecuteTask": ["tasks.execute"],
    f"{PREFIX}ExecuteBatch": ["tasks.execute"],
}
GRANTS = {"reader": ["tasks.read"], "writer": ["tasks.read", "tasks.write"],
          "executor": ["tasks.execute"], "admin": ["tasks.read", "tasks.write", "tasks.execute"]}


def _needs(rpc: str) -> set[str]:
    return set(SCOPES.get(PREFIX + rpc, SCOPES[PREFIX]))


async def test_scopes_per_method_and_expired_tokens() -> None:
    """Each RPC needs its scope (PERMISSION_DENIED without); an expired token is UNAUTHENTICATED."""
    clock = FakeClock()
    tokens = {f"tok-{who}-Zq9secret": (scopes, clock.now() + 60) for who, scopes in GRANTS.items()}
    auth = BearerAuth(ExpiringTokens(tokens, clock), scopes=SCOPES)
    store = TaskStore(":memory:")
    servicer = TaskServicer(store, _Arm())
    server = grpc.aio.server(interceptors=server_interceptors(auth=auth, metrics=False))
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    outcomes: dict[tuple[str, str], grpc.StatusCode] = {}
    try:
        with capture_logs() as logs:
            loop = asyncio.get_running_loop()
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                for who in GRANTS:
                    for rpc in RPCS:
                        outcomes[(who, rpc)] = await loop.run_in_executor(
                            None, _call, channel, rpc,
                            [("authorization", f"Bearer tok-{who}-Zq9secret")])
                clock.advance(60)  # every token expires now
                expired = {rpc: await loop.run_in_executor(
                    None, _call, channel, rpc, [("authorization", "Bearer tok-admin-Zq9secret")])
                    for rpc in RPCS}
    finally:
        await server.stop(None)
        servicer.close()
        store.close()
    for (who, rpc), code in outcomes.items():
        allowed = _needs(rpc) <= set(GRANTS[who])
        denied = code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
        assert denied is not allowed, (who, rpc, code)
        if not allowed:
            assert code is grpc.StatusCode.PERMISSION_DENIED, (who, rpc, code)
    assert set(expired.values()) == {grpc.StatusCode.UNAUTHENTICATED}
    text = repr(logs)
    assert "AUTHORIZATION_ERROR" in text and "AUTHENTICATION_ERROR" in text
    assert "Zq9secret" not in text  # no token in any log event (not hex: request ids are)

