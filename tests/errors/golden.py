"""The golden statuses: what ``to_status`` sends for a broad matrix of errors, locked in bytes.

``python -m tests.errors.golden`` (re)writes ``golden_status.json`` from the encoder in this
checkout. It was first written from main before the encoder was rewritten on the generated
classes alone; regenerate it only to change the wire format deliberately, and say so.

Protobuf leaves the order of map entries on the wire to the writer, and upb's order is a hash
order seeded per process: a status whose ``ErrorInfo.metadata`` or ``Struct`` holds two or
more entries has no fixed bytes unless the writer fixes the order. :func:`canonical` rewrites a
status with every map sorted (protobuf's deterministic serialisation, inside every packed
detail too); the test compares those statuses canonically and every other status byte for byte.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, struct_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc import errors as e
from octollm_grpc._proto.octollm.errors.v1 import errors_pb2

FIXTURE = Path(__file__).with_name("golden_status.json")
DETAILS_KEY = "grpc-status-details-bin"

DETAIL_TYPES: dict[str, type[Message]] = {
    "type.googleapis.com/" + cls.DESCRIPTOR.full_name: cls
    for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                error_details_pb2.ResourceInfo, error_details_pb2.PreconditionFailure,
                error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo,
                error_details_pb2.RequestInfo, error_details_pb2.DebugInfo,
                error_details_pb2.Help, error_details_pb2.LocalizedMessage,
                errors_pb2.ErrorEnvelope)
}

_REQ = "3f1c2b9e-6a47-4d1e-9a0b-5c2d7e8f9a10"


def _errors() -> Iterator[tuple[str, Callable[[], BaseException]]]:
    """Every built-in class with typical arguments, and the shapes the encoder treats apart."""
    yield "base", lambda: e.OctoLLMError("something failed")
    yield "validation", lambda: e.ValidationError("bad value", field="name")
    yield "validation_no_field", lambda: e.ValidationError("bad value")
    yield "invalid_input", lambda: e.InvalidInputError("Task description is required",
                                                       field="description")
    yield "validation_errors", lambda: e.ValidationErrors([
        {"field": "description", "message": "Description is required"},
        {"field": "priority", "message": "Priority must be between 1 and 10",
         "reason": "RANGE"}])
    yield "task_not_found", lambda: e.TaskNotFoundError("task-7f3c9a2e-000042")
    yield "authentication", lambda: e.AuthenticationError()
    yield "authorization", lambda: e.AuthorizationError("missing scope tasks:write",
                                                        details={"scope": "tasks:write"})
    yield "pii", lambda: e.PiiDetectedError("email")
    yield "invalid_state", lambda: e.InvalidStateError("Task task-1 is already completed",
                                                       details={"subject": "task-1"})
    yield "invalid_state_no_subject", lambda: e.InvalidStateError("not now")
    yield "resource", lambda: e.ResourceError("out of sandboxes", retry_after=2)
    yield "arm_unavailable", lambda: e.ArmUnavailableError(["code", "web-search"])
    yield "capacity", lambda: e.CapacityExceededError(
        "queue full", details={"queue_depth": 5000}, retry_after=0.25)
    yield "rate_limit", lambda: e.RateLimitError(limit=100, window=60, retry_after=30)
    yield "rate_limit_keyed", lambda: _with(e.RateLimitError(limit=5, window=1, retry_after=0.2),
                                            key="user-1")
    yield "circuit_open", lambda: e.CircuitOpenError("arm:50052", retry_after=1.5)
    yield "system", lambda: e.SystemError("disk full")
    yield "internal", lambda: e.InternalError()
    yield "database", lambda: e.DatabaseError("insert", OSError("database is locked"))
    yield "cache", lambda: e.CacheError("redis down", details={"node": "cache-1"})
    yield "network", lambda: e.NetworkError("connection reset")
    yield "serialization", lambda: e.SerializationError("bad json", details={"offset": 17})
    yield "timeout", lambda: e.TimeoutError("llm call", 30)
    yield "external", lambda: e.ExternalError("upstream failed")
    yield "llm_api", lambda: e.LLMAPIError("openai", 503, "overloaded")
    yield "llm_api_none", lambda: e.LLMAPIError("openai")
    yield "vector_db", lambda: e.VectorDBError("qdrant timeout")
    yield "third_party", lambda: e.ThirdPartyAPIError("github 502")
    yield "not_found", lambda: e.NotFoundError("no such widget", details={"widget": "w-9"})
    yield "already_exists", lambda: e.AlreadyExistsError("widget w-9 exists")
    yield "aborted", lambda: e.AbortedError("lost the race", retry_after=0.5)
    yield "out_of_range", lambda: e.OutOfRangeError("offset past the end", field="offset")
    yield "resource_exhausted", lambda: e.ResourceExhaustedError("disk quota", retry_after=60)
    yield "unimplemented", lambda: e.UnimplementedError("no such feature")
    yield "cancelled", lambda: e.CancelledCallError("the caller went away")
    # retry advice of every sort
    for name, value in (("none", None), ("zero", 0), ("zero_float", 0.0), ("frac", 0.123456789),
                        ("ns", 1e-9), ("sub_ns", 1e-12), ("big", 1e9), ("huge", 1e12),
                        ("beyond_duration", 1e300), ("inf", float("inf")),
                        ("nan", float("nan")), ("negative", -1), ("bool", True)):
        yield f"retry_{name}", lambda v=value: e.OctoLLMError("later", retry_after=v)
    # details of every shape
    for name, details in (
        ("str", {"a": "x", "b": "y"}),
        ("unsorted", {"zeta": "1", "alpha": "2", "mid": "3"}),
        ("int", {"n": 7, "neg": -3}),
        ("float", {"ratio": 0.5}),
        ("bool", {"hot": True, "cold": False}),
        ("none", {"why": None}),
        ("mixed", {"depth": 5000, "ratio": 0.5, "hot": True, "why": None, "s": "t"}),
        ("nested_list", {"items": [1, 2.5, None, True, "x", [1, [2]]]}),
        ("nested_map", {"outer": {"inner": {"k": "v", "n": 1}, "b": [{"c": "d"}]}}),
        ("integral_float", {"n": 2.0}),
        ("integral_float_nested", {"l": [1.0, 2]}),
        ("huge_int", {"n": 2**60}),
        ("huge_int_nested", {"m": {"n": -(2**70)}}),
        ("non_finite", {"a": float("inf"), "b": float("nan")}),
        ("unicode", {"k😈": "v☺", "ключ": "значение", "": ""}),
        ("surrogate_value", {"s": "lone \ud800 surrogate"}),
        ("surrogate_key", {"\udfff": "v"}),
        ("non_str_key", {1: "one", None: "none"}),
        ("objects", {"obj": object.__new__(_Repr), "tuple": (1, "a"), "set": frozenset({3})}),
        ("over_budget", {"big": "y" * 8000}),
        ("over_budget_list", {"items": [f"item-{i}" * 5 for i in range(600)]}),
        ("over_budget_map", {f"key{i}": "v" * 40 for i in range(300)}),
        ("over_budget_violations", None),
    ):
        if details is None:
            yield f"details_{name}", lambda: e.ValidationErrors([
                {"field": f"field_{i}", "message": "m" * 60} for i in range(400)])
        else:
            yield f"details_{name}", lambda d=details: e.OctoLLMError("shaped", details=d)
    yield "message_unicode", lambda: e.OctoLLMError(
        "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n")
    yield "message_surrogate", lambda: e.OctoLLMError("bad \udc80 text")
    yield "message_empty", lambda: e.OctoLLMError("")
    yield "message_long", lambda: e.OctoLLMError("m" * 5000)
    yield "message_long_unicode", lambda: e.OctoLLMError("☺" * 2000)
    yield "message_percent", lambda: e.OctoLLMError("100% done%")
    yield "message_long_over_budget", lambda: e.ValidationErrors([
        {"field": "f" * 200, "message": "☺" * 300} for _ in range(40)])
    yield "error_code_long", lambda: e.OctoLLMError("x", error_code="C" * 1000)
    yield "error_code_custom", lambda: e.OctoLLMError("x", error_code="CUSTOM_CODE")
    yield "error_code_empty", lambda: e.OctoLLMError("x", error_code="")
    yield "unexpected", lambda: RuntimeError("secret connection string")
    yield "unexpected_key", lambda: KeyError(1)
    yield "builtin_timeout", lambda: TimeoutError("slow")


class _Repr:
    def __str__(self) -> str:
        return "an object"


def _with(error: e.OctoLLMError, **details: Any) -> e.OctoLLMError:
    error.details.update(details)
    return error


def cases() -> Iterator[tuple[str, Callable[[], BaseException], dict[str, Any]]]:
    """``(name, make_error, to_status keywords)``: each error with and without a request id,
    and a few with a custom, a long and a unicode domain."""
    for name, make in _errors():
        yield f"{name}/no_id", make, {}
        yield f"{name}/id", make, {"request_id": _REQ}
    for name, make in (("task_not_found", lambda: e.TaskNotFoundError("t-1")),
                       ("rate_limit", lambda: e.RateLimitError(1, 1, 1)),
                       ("unexpected", lambda: RuntimeError("x"))):
        yield f"{name}/domain", make, {"request_id": "r", "domain": "acme.example"}
        yield f"{name}/domain_long", make, {"domain": "d" * 1000, "request_id": "r" * 1000}
        yield f"{name}/domain_unicode", make, {"domain": "dömäin", "request_id": "☺\udc00"}
    for name, make in (("unexpected", lambda: RuntimeError("secret")),
                       ("task_not_found", lambda: e.TaskNotFoundError("t-1"))):
        yield f"{name}/debug", make, {"request_id": "r", "debug": True}


def unpack(detail: any_pb2.Any) -> Message:
    """A packed detail as its generated message (every type the encoder writes)."""
    message = DETAIL_TYPES[detail.type_url]()
    message.ParseFromString(detail.value)
    return message


def canonical(data: bytes) -> bytes:
    """The status ``data`` encodes, written with every map sorted (in each detail too)."""
    status = status_pb2.Status.FromString(data)
    for detail in status.details:
        detail.value = unpack(detail).SerializeToString(deterministic=True)
    return status.SerializeToString(deterministic=True)


def has_multi_entry_map(data: bytes) -> bool:
    """True when a detail of the status holds a map with two or more entries."""
    def walk(message: Message) -> bool:
        for field, value in message.ListFields():
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                if len(value) > 1:
                    return True
                values = value.values()
            elif field.message_type is None:
                continue
            else:
                values = [value] if isinstance(value, Message) else value
            for item in values:
                if isinstance(item, Message) and walk(item):
                    return True
        return False

    status = status_pb2.Status.FromString(data)
    return any(walk(unpack(detail)) for detail in status.details)


def record(status: Any) -> dict[str, Any]:
    """What the fixture keeps of one ``RichStatus``."""
    trailers = []
    for key, value in status.trailing_metadata:
        if isinstance(value, bytes):
            trailers.append([key, "b64:" + base64.b64encode(value).decode()])
        else:
            trailers.append([key, value])
    return {"code": status.code.name, "message": status.details, "trailers": trailers}


def details_bytes(recorded: dict[str, Any]) -> bytes:
    """The ``grpc-status-details-bin`` bytes of a recorded status."""
    for key, value in recorded["trailers"]:
        if key == DETAILS_KEY:
            return base64.b64decode(value[4:])
    raise AssertionError("no details trailer recorded")


def without_debug(data: bytes) -> tuple[bytes, list[Message]]:
    """The status with its ``DebugInfo`` taken out, and the ``DebugInfo`` messages."""
    status = status_pb2.Status.FromString(data)
    kept, debug = [], []
    for detail in status.details:
        (debug if detail.type_url.endswith("DebugInfo") else kept).append(detail)
    del status.details[:]
    status.details.extend(kept)
    return status.SerializeToString(), [unpack(d) for d in debug]


def generate() -> dict[str, Any]:
    """The fixture's content, from the encoder in this checkout."""
    from octollm_grpc.status import to_status

    out: dict[str, Any] = {}
    for name, make, kwargs in cases():
        recorded = record(to_status(make(), **kwargs))
        data = details_bytes(recorded)
        if kwargs.get("debug"):
            # The traceback names this checkout's paths and lines: keep the rest of the status.
            data, debug = without_debug(data)
            recorded["debug_infos"] = len(debug)
            recorded["trailers"] = [
                [key, "b64:" + base64.b64encode(data).decode()] if key == DETAILS_KEY
                else [key, value] for key, value in recorded["trailers"]]
        recorded["multi_entry_map"] = has_multi_entry_map(data)
        out[name] = recorded
    return out


def main() -> None:
    """Write the fixture."""
    content = generate()
    FIXTURE.write_text(json.dumps(content, indent=1, ensure_ascii=True) + "\n")
    print(f"wrote {len(content)} statuses to {FIXTURE}", file=sys.stderr)


# Keep struct_pb2 imported: its descriptors must be in the pool to parse the envelope.
_ = struct_pb2

if __name__ == "__main__":
    main()
