"""The servicer context the core is typed against is what each stack really hands it."""

from __future__ import annotations

import inspect
from concurrent import futures
from typing import Any

import grpc
import grpc.aio

from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.server._handlers import ServicerContext
from octollm_grpc.server._threaded import ThreadContext
from tests.server.harness import Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server

_USED = [name for name in dir(ServicerContext)
         if not name.startswith("_") and callable(getattr(ServicerContext, name))]


def test_the_protocol_names_what_the_core_calls() -> None:
    """The protocol lists the context methods the core reads and sets, and only those."""
    assert sorted(_USED) == ["code", "details", "invocation_metadata", "peer",
                             "set_trailing_metadata", "time_remaining", "trailing_metadata"]


def test_grpc_context_classes_have_every_method() -> None:
    """grpcio's public context classes (sync and aio) have each method (sync stubs lack some)."""
    for cls in (grpc.ServicerContext, grpc.aio.ServicerContext, ThreadContext):
        missing = [name for name in _USED if not callable(getattr(cls, name, None))]
        assert missing == [], cls


def _recorder(seen: list[Any]) -> Script:
    def record(context: Any) -> None:
        seen.append(context)
        # Each method answers on a live call (the core calls them all).
        assert isinstance(context.peer(), str)
        assert context.time_remaining() is not None
        assert any(key == "x-request-id" for key, _ in context.invocation_metadata())

    return Script(before=record)


def test_sync_handler_context_satisfies_the_protocol() -> None:
    """grpc.server: the context a handler (and the core) gets is a ServicerContext."""
    seen: list[Any] = []
    with sync_server(sync_handlers(_recorder(seen)), server_interceptors(metrics=False)) as target:
        outcome = call_sync(target, "unary", [("x-request-id", "s-1")])
    assert outcome.error is None
    assert [isinstance(c, ServicerContext) for c in seen] == [True]


async def test_aio_handler_context_satisfies_the_protocol() -> None:
    """grpc.aio coroutine handlers: the context is a ServicerContext."""
    seen: list[Any] = []
    async with aio_server(aio_handlers(_recorder(seen)),
                          server_aio.server_interceptors(metrics=False)) as target:
        outcome = await call_aio(target, "unary", [("x-request-id", "a-1")])
    assert outcome.error is None
    assert [isinstance(c, ServicerContext) for c in seen] == [True]


async def test_thread_pool_handler_context_satisfies_the_protocol() -> None:
    """grpc.aio plain-function handlers get a ThreadContext, which is a ServicerContext."""
    seen: list[Any] = []
    script = _recorder(seen)

    def plain(request: bytes, context: Any) -> bytes:
        script.start(context)
        return b"ok"

    handlers = [grpc.method_handlers_generic_handler("test.Shapes", {
        "Unary": grpc.unary_unary_rpc_method_handler(plain)})]
    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        async with aio_server(handlers, server_aio.server_interceptors(metrics=False),
                              migration_pool=pool) as target:
            outcome = await call_aio(target, "unary", [("x-request-id", "t-1")])
    assert outcome.error is None
    assert [type(c) for c in seen] == [ThreadContext]
    assert isinstance(seen[0], ServicerContext)
    assert not inspect.iscoroutinefunction(seen[0].invocation_metadata)
