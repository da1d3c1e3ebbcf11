"""Unknown reasons decode to a class that says what the gRPC code says.

A plain ``context.abort(NOT_FOUND, ...)`` or a reason no class registers used to come back as
``ValidationError``, so ``except ValidationError`` caught "not found". Such errors now decode
to a class named after their code (``NotFoundError`` ...), keeping ``code()``, the reason (as
``error_code``) and the details; the seed's classes and their hierarchy are unchanged.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc import codes
from octollm_grpc import errors as e
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.status import from_rpc_error
from octollm_grpc.status._limits import DETAILS_KEY
from tests.client.backend import UNARY, Backend, Reply
from tests.server.harness import Script, call_aio, call_sync, sync_handlers
from tests.servers import aio_server, sync_server

C = grpc.StatusCode
BY_CODE: list[tuple[grpc.StatusCode, type[e.OctoLLMError], type[e.OctoLLMError] | None]] = [
    # (code, class it decodes to, a seed class it must NOT be an instance of)
    (C.NOT_FOUND, e.NotFoundError, e.ValidationError),
    (C.ALREADY_EXISTS, e.AlreadyExistsError, e.ValidationError),
    (C.ABORTED, e.AbortedError, e.ValidationError),
    (C.OUT_OF_RANGE, e.OutOfRangeError, None),
    (C.RESOURCE_EXHAUSTED, e.ResourceExhaustedError, e.RateLimitError),
    (C.UNIMPLEMENTED, e.UnimplementedError, e.SystemError),
    (C.CANCELLED, e.CancelledCallError, e.SystemError),
    (C.INVALID_ARGUMENT, e.ValidationError, None),
    (C.FAILED_PRECONDITION, e.InvalidStateError, None),
    (C.UNAUTHENTICATED, e.AuthenticationError, None),
    (C.PERMISSION_DENIED, e.AuthorizationError, None),
    (C.UNAVAILABLE, e.NetworkError, None),
    (C.DEADLINE_EXCEEDED, e.TimeoutError, None),
    (C.INTERNAL, e.SystemError, None),
    (C.UNKNOWN, e.SystemError, None),
    (C.DATA_LOSS, e.SystemError, None),
]


def _abort_with(code: grpc.StatusCode) -> Any:
    def before(context: Any) -> None:
        context.abort(code, "no such widget: w-9")

    return before


def _check(code: grpc.StatusCode, cls: type[e.OctoLLMError],
           not_cls: type[e.OctoLLMError] | None, error: Any) -> None:
    decoded = from_rpc_error(error)
    assert type(decoded) is cls
    assert decoded.code() is code
    assert decoded.details() == "no such widget: w-9"
    if not_cls is not None:
        assert not isinstance(decoded, not_cls)


@pytest.mark.parametrize(("code", "cls", "not_cls"), BY_CODE, ids=[c[0].name for c in BY_CODE])
def test_sync_plain_abort_decodes_by_its_code(code: grpc.StatusCode, cls: type[e.OctoLLMError],
                                              not_cls: type[e.OctoLLMError] | None) -> None:
    """Sync server, a handler's plain context.abort(code, ...): the class its code names."""
    script = Script(before=_abort_with(code))
    with sync_server(sync_handlers(script), server_interceptors(metrics=False)) as target:
        outcome = call_sync(target, "unary")
    _check(code, cls, not_cls, outcome.error)


async def test_aio_plain_abort_decodes_by_its_code() -> None:
    """aio server, context.abort(NOT_FOUND, ...): NotFoundError, not a ValidationError."""

    async def unary(request: bytes, context: Any) -> bytes:
        await context.abort(C.NOT_FOUND, "no such widget: w-9")
        return b""

    handlers = [grpc.method_handlers_generic_handler("test.Shapes", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary)})]
    async with aio_server(handlers, server_aio.server_interceptors(metrics=False)) as target:
        outcome = await call_aio(target, "unary")
    _check(C.NOT_FOUND, e.NotFoundError, e.ValidationError, outcome.error)


def test_unregistered_reason_keeps_code_reason_and_details() -> None:
    """A reason no class registers: the class its code names, with the reason and details."""
    info = error_details_pb2.ErrorInfo(reason="WIDGET_MISSING", domain="widgets.example",
                                       metadata={"widget": "w-9"})
    status = status_pb2.Status(code=C.NOT_FOUND.value[0], message="no such widget: w-9",
                               details=[any_pb2.Any(
                                   type_url="type.googleapis.com/google.rpc.ErrorInfo",
                                   value=info.SerializeToString())])
    backend = Backend([Reply(C.NOT_FOUND, message="no such widget: w-9",
                             trailers=((DETAILS_KEY, status.SerializeToString()),))])
    with sync_server([backend.handler()]) as target, grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(UNARY)(b"x", timeout=5)
    decoded = from_rpc_error(raised.value)
    assert type(decoded) is e.NotFoundError
    assert decoded.error_code == "WIDGET_MISSING"
    assert decoded.details == {"widget": "w-9"}
    assert decoded.code() is C.NOT_FOUND


@pytest.mark.parametrize("cls", [e.NotFoundError, e.AlreadyExistsError, e.AbortedError,
                                 e.OutOfRangeError, e.ResourceExhaustedError,
                                 e.UnimplementedError, e.CancelledCallError])
def test_status_classes_round_trip(cls: type[e.OctoLLMError]) -> None:
    """Raised by a handler, each new class maps to its code and comes back as itself."""
    script = Script(error=lambda: cls("no such widget: w-9", details={"widget": "w-9"}))
    with sync_server(sync_handlers(script), server_interceptors(metrics=False)) as target:
        outcome = call_sync(target, "unary")
    assert outcome.error is not None
    decoded = from_rpc_error(outcome.error)
    assert type(decoded) is cls
    assert decoded.code() is codes.mapping_for(cls("x")).grpc_code
    assert decoded.details == {"widget": "w-9"}


def test_seed_hierarchy_is_unchanged() -> None:
    """The seed's classes keep their bases: TaskNotFoundError is still a ValidationError."""
    assert issubclass(e.TaskNotFoundError, e.ValidationError)
    assert issubclass(e.RateLimitError, e.ResourceError)
    assert issubclass(e.TimeoutError, e.SystemError)
