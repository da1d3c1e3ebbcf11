"""ServerOptions: one frozen value says what a server stack is made of, for both stacks."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from octollm_grpc import errors as e
from octollm_grpc.server import BearerAuth, RequestIds, ServerOptions, server_interceptors
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server._options import ServerKeywords
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._limits import DEFAULT_DOMAIN
from tests.server.harness import Script, aio_handlers, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server


def _domain(error: Any) -> str:
    packed = next(d for d in from_rpc_error(error).rich_status.details
                  if d.type_url.endswith("ErrorInfo"))
    info = error_details_pb2.ErrorInfo()
    packed.Unpack(info)
    return info.domain


def test_defaults_are_the_no_argument_stack() -> None:
    """The defaults: request ids, logging and metrics on; rate limit and auth off."""
    options = ServerOptions()
    assert dataclasses.asdict(options) == {
        "request_ids": True, "logger": True, "metrics": True, "rate_limit": None,
        "auth": None, "domain": DEFAULT_DOMAIN, "debug": False, "tracer_provider": None,
    }


def test_options_are_frozen_and_compare_by_value() -> None:
    """Frozen (no field can change) and equal when every field is equal."""
    ids = RequestIds(header="x-id")
    assert ServerOptions(request_ids=ids, debug=True) == ServerOptions(
        request_ids=RequestIds(header="x-id"), debug=True)
    assert ServerOptions(debug=True) != ServerOptions()
    assert hash(ServerOptions(domain="d")) == hash(ServerOptions(domain="d"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServerOptions().debug = True  # type: ignore[misc]


def test_options_take_keywords_only() -> None:
    """Fields are keywords only: a positional value is a TypeError, not a silent mix-up."""
    with pytest.raises(TypeError):
        ServerOptions(True)  # type: ignore[misc]


def test_keywords_are_the_fields() -> None:
    """ServerKeywords (what type checkers check callers against) names every field, same types."""
    fields = {f.name: f.type for f in dataclasses.fields(ServerOptions)}
    hints = typing.get_type_hints(ServerKeywords)
    assert set(hints) == set(fields)
    resolved = typing.get_type_hints(ServerOptions)
    assert {name: resolved[name] for name in fields} == hints


@pytest.mark.parametrize("factory", [server_interceptors, server_aio.server_interceptors])
def test_a_bad_keyword_is_rejected(factory: Any) -> None:
    """An unknown keyword, a positional non-options value: TypeError on both stacks."""
    with pytest.raises(TypeError, match="metrcs"):
        factory(metrcs=False)
    with pytest.raises(TypeError, match="ServerOptions"):
        factory(True)


def test_sync_stack_refuses_an_async_verifier_given_in_options() -> None:
    """The sync stack's TypeError for a coroutine verifier holds for an options value too."""

    async def verify(token: str) -> list[str]:
        return []

    with pytest.raises(TypeError, match=r"grpc\.aio"):
        server_interceptors(ServerOptions(auth=BearerAuth(verify)))
    with pytest.raises(TypeError, match=r"grpc\.aio"):
        server_interceptors(ServerOptions(), auth=BearerAuth(verify))
    assert len(server_aio.server_interceptors(ServerOptions(auth=BearerAuth(verify)))) == 1


def test_sync_stack_from_options_and_keywords() -> None:
    """Keywords replace the options' fields; the options value itself is left unchanged."""
    options = ServerOptions(metrics=False, domain="options.example")
    script = Script(error=lambda: e.TaskNotFoundError("t"))
    with sync_server(sync_handlers(script), server_interceptors(options)) as target:
        first = call_sync(target, "unary")
    with sync_server(sync_handlers(script),
                     server_interceptors(options, domain="keyword.example")) as target:
        second = call_sync(target, "unary")
    assert first.error is not None and second.error is not None
    assert _domain(first.error) == "options.example"
    assert _domain(second.error) == "keyword.example"
    assert options.domain == "options.example"


async def test_aio_stack_from_the_same_options() -> None:
    """One options value builds an aio stack too, with the same behaviour."""
    options = ServerOptions(metrics=False, domain="options.example", request_ids=False)
    script = Script(error=lambda: e.TaskNotFoundError("t"))
    async with aio_server(aio_handlers(script),
                          server_aio.server_interceptors(options=options)) as target:
        outcome = await call_aio(target, "unary", [("x-request-id", "ignored")])
    assert outcome.error is not None
    assert outcome.error.code() is grpc.StatusCode.NOT_FOUND
    assert _domain(outcome.error) == "options.example"
    assert "x-request-id" not in outcome.trailers
