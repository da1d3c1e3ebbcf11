"""OctoLLMError <-> ``google.rpc.Status``: encoding on the server, decoding on the client.

Encoding puts, in this order, ``ErrorInfo`` (reason = error_code), the standard detail the
class calls for (``BadRequest``, ``ResourceInfo``, ``PreconditionFailure``, ``QuotaFailure``,
``RetryInfo``), ``RequestInfo`` when the request id is known, ``DebugInfo`` only when asked
for, and last our ``ErrorEnvelope`` for a lossless round trip. The status's code and message
come from the same values as the call's, so ``grpc_status.rpc_status.from_call`` accepts it.

The usual status (details of scalar values, with or without retry advice, and the generic
status of unexpected exceptions) is written straight to bytes from pieces prepared once per
class (:mod:`octollm_grpc._wire`, about 3x faster); the rest (lists and maps in the details,
integral floats, ``debug``) is built with the generated message classes. Both give the same
message (property-tested).

Decoding never raises: a status without our details, with unknown detail types, or with
garbage in ``grpc-status-details-bin`` becomes a sensible class for its code.
"""

from __future__ import annotations

import json
import math
import re
import struct
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import grpc
from google.protobuf import any_pb2, duration_pb2, json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc import _wire, codes
from octollm_grpc import errors as e
from octollm_grpc._proto.octollm.errors.v1 import errors_pb2

__all__ = [
    "DEFAULT_DOMAIN",
    "DETAILS_KEY",
    "GENERIC_MESSAGE",
    "MAX_DETAILS_BYTES",
    "MAX_DETAILS_DEPTH",
    "PUSHBACK_KEY",
    "RichStatus",
    "StatusTemplate",
    "from_rpc_error",
    "from_status_proto",
    "to_status",
    "to_status_proto",
]

DETAILS_KEY = "grpc-status-details-bin"
PUSHBACK_KEY = "grpc-retry-pushback-ms"
DEFAULT_DOMAIN = "octollm.grpc"
#: What the caller sees of an unexpected exception; its text goes to the log only.
GENERIC_MESSAGE = "An internal error occurred"
TIMEOUT_MESSAGE = "The operation timed out"
#: Longest status message sent, in UTF-8 bytes; longer ones are cut (with "...").
MAX_MESSAGE_BYTES = 1024
#: Longest error code, domain and request id written to a status, in UTF-8 bytes.
MAX_IDENTIFIER_BYTES = 256
#: Longest retry advice encoded (google.protobuf.Duration's maximum); more is sent as this.
MAX_RETRY_AFTER = 315_576_000_000
#: The message's length when even the shortest details do not fit with the full one.
_LAST_RESORT_MESSAGE_BYTES = 128
#: Deepest nesting of lists and maps decoded from a status's details; deeper details are left
#: out (the error keeps its class, code and message).
MAX_DETAILS_DEPTH = 64
#: Longest JSON text of details decoded (far over what fits in a trailer).
MAX_DETAILS_BYTES = 64 * 1024
#: Room for grpc-message plus grpc-status-details-bin, under gRPC's default 8 KiB metadata limit.
TRAILER_BUDGET = 7 * 1024

_TYPE_PREFIX = "type.googleapis.com/"
_ERROR_INFO = _TYPE_PREFIX + error_details_pb2.ErrorInfo.DESCRIPTOR.full_name
_RETRY_INFO = _TYPE_PREFIX + error_details_pb2.RetryInfo.DESCRIPTOR.full_name
_REQUEST_INFO = _TYPE_PREFIX + error_details_pb2.RequestInfo.DESCRIPTOR.full_name
_BAD_REQUEST = _TYPE_PREFIX + error_details_pb2.BadRequest.DESCRIPTOR.full_name
_ENVELOPE = _TYPE_PREFIX + errors_pb2.ErrorEnvelope.DESCRIPTOR.full_name


class RichStatus(NamedTuple):
    """A ``grpc.Status`` (code, details, trailing_metadata); :attr:`proto` is the
    ``google.rpc.Status`` its ``grpc-status-details-bin`` trailer carries."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]

    @property
    def proto(self) -> status_pb2.Status:
        """The ``google.rpc.Status`` sent (parsed from the trailer on each access)."""
        for key, value in self.trailing_metadata:
            if key == DETAILS_KEY and isinstance(value, bytes):
                return status_pb2.Status.FromString(value)
        return status_pb2.Status(code=self.code.value[0], message=self.details)


# NamedTuple cannot take a second base; register it so isinstance(s, grpc.Status) holds.
grpc.Status.register(RichStatus)


# -- encoding -------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` made JSON-safe: unknown objects become their ``str``, keys become strings, and
    lone surrogates in any string become ``?`` (protobuf cannot serialize them)."""
    if isinstance(value, str):
        return _safe_text(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {_safe_text(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return _safe_text(str(value))


def _struct_is_exact(value: Any) -> bool:
    """True when a ``Struct`` carries ``value`` exactly, given that integral numbers decode as
    ``int``: no integral floats (``2.0``) and no integers a double cannot hold."""
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT
    if isinstance(value, float):
        return not value.is_integer()
    if isinstance(value, dict):
        return all(_struct_is_exact(v) for v in value.values())
    if isinstance(value, list):
        return all(_struct_is_exact(v) for v in value)
    return False


_MAX_EXACT_INT = 2**53


def _struct(data: Mapping[str, Any]) -> struct_pb2.Struct | None:
    struct = struct_pb2.Struct()
    try:
        struct.update(data)
    except (ValueError, TypeError, OverflowError):
        return None
    return struct


def _metadata(details: Mapping[str, Any]) -> dict[str, str]:
    """ErrorInfo's string map: the scalar details only (lists and maps are in the envelope)."""
    out: dict[str, str] = {}
    for key, value in details.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            out[key] = str(value)
        elif value is None:
            out[key] = "null"
    return out


def _all_str(details: Mapping[str, Any]) -> bool:
    """True for the common shape of details: string keys and string values only.

    For those, :func:`_jsonable` is a plain copy, the ``Struct`` is exact and ``ErrorInfo``'s
    metadata is the same map, so :func:`_build_status` skips the general walk.
    """
    for key, value in details.items():
        if type(key) is not str or type(value) is not str:
            return False
        if not (key.isascii() and value.isascii()) and (
                _safe_text(key) is not key or _safe_text(value) is not value):
            return False  # a lone surrogate: _jsonable replaces it
    return True


def _str_struct(data: Mapping[str, str]) -> struct_pb2.Struct:
    """What ``_struct(data)`` gives for a map of strings, without ``Struct.update``'s walk."""
    struct = struct_pb2.Struct()
    fields = struct.fields
    for key, value in data.items():
        fields[key].string_value = value
    return struct


def _any_url(message_class: Any) -> str:
    return _TYPE_PREFIX + str(message_class.DESCRIPTOR.full_name)


_ErrorInfo = error_details_pb2.ErrorInfo
_ResourceInfo = error_details_pb2.ResourceInfo
_RequestInfo = error_details_pb2.RequestInfo
_AnyMessage = any_pb2.Any
_RESOURCE_INFO = _any_url(_ResourceInfo)
_PRECONDITION_FAILURE = _any_url(error_details_pb2.PreconditionFailure)
_QUOTA_FAILURE = _any_url(error_details_pb2.QuotaFailure)
_DEBUG_INFO = _any_url(error_details_pb2.DebugInfo)


def _pack(message: Any, type_url: str) -> any_pb2.Any:
    # What Any.Pack(message) gives, without its per-call descriptor lookup.
    return _AnyMessage(type_url=type_url, value=message.SerializeToString())


def _field_violations(
    details: Mapping[str, Any], message: str
) -> list[error_details_pb2.BadRequest.FieldViolation]:
    items = details.get("errors")
    violations = []
    if isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping):
                violations.append(error_details_pb2.BadRequest.FieldViolation(
                    field=str(item.get("field", "")),
                    description=str(item.get("message", "")),
                    reason=str(item.get("reason", "")),
                ))
    elif details.get("field"):
        violations.append(error_details_pb2.BadRequest.FieldViolation(
            field=str(details["field"]), description=message))
    return violations


def _seconds_to_duration(seconds: float) -> Any:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(round(seconds * 1e9)))
    return duration


def _valid_retry_after(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    # google.protobuf.Duration's range: beyond it the advice cannot be encoded at all.
    return min(value, MAX_RETRY_AFTER)


def _safe_text(text: str) -> str:
    """``text`` as valid UTF-8 (lone surrogates would make protobuf and gRPC reject it)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _truncate_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    if message.isascii() and len(message) <= limit:
        return message  # one byte per character: no need to encode to measure it
    data = message.encode("utf-8")
    if len(data) <= limit:
        return message
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary)."""
    if len(text) <= limit // 4:
        return text  # four bytes per character at most
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _wire_length(message: str) -> int:
    """Bytes ``grpc-message`` takes: gRPC percent-encodes all but printable ASCII."""
    if message.isascii() and message.isprintable() and "%" not in message:
        return len(message)
    return sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in message.encode("utf-8"))


def _shortened(value: Any, items: int) -> Any:
    if isinstance(value, str):
        return value[: items * 16]
    if isinstance(value, Mapping):
        return {k: _shortened(v, items) for k, v in list(value.items())[: max(items, 1) * 4]}
    if isinstance(value, list):
        return [_shortened(v, items) for v in value[:items]]
    return value


# What the standard details say, shared by both encoders (the classes and _encode_fast).
_TASK_RESOURCE_TYPE = "octollm.tasks.v1.Task"
_STATE_VIOLATION_TYPE = "STATE"


def _task_name(details: Mapping[str, Any]) -> str:
    """``ResourceInfo.resource_name`` of a missing task."""
    return str(details.get("task_id", ""))


def _state_subject(details: Mapping[str, Any]) -> str:
    """``PreconditionFailure.Violation.subject`` of a failed precondition."""
    return str(details.get("subject", ""))


def _quota_subject(details: Mapping[str, Any]) -> str:
    """``QuotaFailure.Violation.subject`` of a rate limit."""
    return str(details.get("key", "caller"))


# Which standard details a class calls for, by bit; resolved once per class (see _kind_of).
_OCTOLLM = 1
_VALIDATION = 2
_TASK_NOT_FOUND = 4
_INVALID_STATE = 8
_RATE_LIMIT = 16
_KIND_BASES = (
    (e.OctoLLMError, _OCTOLLM),
    (e.ValidationError, _VALIDATION),
    (e.TaskNotFoundError, _TASK_NOT_FOUND),
    (e.InvalidStateError, _INVALID_STATE),
    (e.RateLimitError, _RATE_LIMIT),
)
_kinds: dict[type, int] = {}


def _kind_of(cls: type) -> int:
    kind = _kinds.get(cls)
    if kind is None:
        kind = 0
        for base, bit in _KIND_BASES:
            if issubclass(cls, base):
                kind |= bit
        if len(_kinds) >= 1024:  # classes made at run time must not grow it without bound
            _kinds.clear()
        _kinds[cls] = kind
    return kind


class _Encoding(NamedTuple):
    """What :func:`to_status` needs besides the proto, worked out once per error."""

    proto: status_pb2.Status
    mapping: codes.ErrorMapping
    retry_after: float | None


def _encode(
    exc: BaseException, request_id: str | None, domain: str, debug: bool
) -> _Encoding:
    mapping = codes.mapping_for(exc)
    kind = _kind_of(type(exc))
    if kind & _OCTOLLM:
        assert isinstance(exc, e.OctoLLMError)
        error_code = exc.error_code
        message = _truncate_message(_safe_text(str(exc.message)))
        details: Mapping[str, Any] = exc.details
        retry_after = _valid_retry_after(exc.retry_after)
    else:
        error_code = mapping.error_code
        message = TIMEOUT_MESSAGE if mapping is codes.BUILTIN_TIMEOUT else GENERIC_MESSAGE
        details = {}
        retry_after = None
    # Identifiers are short by nature; absurd ones are cut so the status still fits.
    error_code = _cut(_safe_text(str(error_code)), MAX_IDENTIFIER_BYTES)
    domain = _cut(_safe_text(domain), MAX_IDENTIFIER_BYTES)
    if request_id:
        request_id = _cut(_safe_text(request_id), MAX_IDENTIFIER_BYTES)

    def build(data: Mapping[str, Any], with_debug: bool, flat: bool,
              text: str = message) -> status_pb2.Status:
        return _build_status(exc, kind, mapping.grpc_code, error_code, text, data,
                             retry_after, request_id, domain, with_debug, flat)

    flat = isinstance(details, dict) and _all_str(details)
    safe = dict(details) if flat else _jsonable(details)
    status = build(safe, debug, flat)
    room = TRAILER_BUDGET - _wire_length(message)
    if status.ByteSize() <= room:
        return _Encoding(status, mapping, retry_after)
    for items in (32, 8, 2, 0):
        shortened = {**_shortened(safe, items), "_truncated": True}
        status = build(shortened, False, False)
        if status.ByteSize() <= room:
            return _Encoding(status, mapping, retry_after)
    status = build({"_truncated": True}, False, False)
    if status.ByteSize() <= room:
        return _Encoding(status, mapping, retry_after)
    # The message itself is repeated in several details: a short one always fits, as every
    # other field is bounded by now.
    return _Encoding(build({"_truncated": True}, False, False,
                           _truncate_message(message, _LAST_RESORT_MESSAGE_BYTES)),
                     mapping, retry_after)


def to_status_proto(
    exc: BaseException,
    *,
    request_id: str | None = None,
    domain: str = DEFAULT_DOMAIN,
    debug: bool = False,
) -> status_pb2.Status:
    """The ``google.rpc.Status`` for ``exc`` (for per-item results of batch calls too).

    It fits gRPC's default 8 KiB metadata limit: a message over :data:`MAX_MESSAGE_BYTES` is
    cut, and details too large for the trailer are shortened (lists and strings cut, with
    ``"_truncated": true`` added) rather than lost whole to a ``RESOURCE_EXHAUSTED`` at the client.
    """
    return _encode(exc, request_id, domain, debug).proto


def _build_status(
    exc: BaseException,
    kind: int,
    grpc_code: grpc.StatusCode,
    error_code: str,
    message: str,
    details: Mapping[str, Any],
    retry_after: float | None,
    request_id: str | None,
    domain: str,
    debug: bool,
    flat: bool,
) -> status_pb2.Status:
    # ``flat``: every key and value of ``details`` is a str (see _all_str).
    packed = [_pack(_ErrorInfo(
        reason=error_code, domain=domain, metadata=details if flat else _metadata(details)),
        _ERROR_INFO)]
    if kind & _VALIDATION:
        violations = _field_violations(details, message)
        if violations:
            packed.append(_pack(error_details_pb2.BadRequest(field_violations=violations),
                                _BAD_REQUEST))
    if kind & _TASK_NOT_FOUND:
        packed.append(_pack(_ResourceInfo(
            resource_type=_TASK_RESOURCE_TYPE,
            resource_name=_task_name(details),
            description=message,
        ), _RESOURCE_INFO))
    if kind & _INVALID_STATE:
        packed.append(_pack(error_details_pb2.PreconditionFailure(violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type=_STATE_VIOLATION_TYPE, subject=_state_subject(details),
                description=message)
        ]), _PRECONDITION_FAILURE))
    if kind & _RATE_LIMIT:
        packed.append(_pack(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(
                subject=_quota_subject(details), description=message)
        ]), _QUOTA_FAILURE))
    if retry_after is not None and retry_after > 0:
        packed.append(_pack(error_details_pb2.RetryInfo(
            retry_delay=_seconds_to_duration(retry_after)), _RETRY_INFO))
    if request_id:
        packed.append(_pack(_RequestInfo(request_id=request_id), _REQUEST_INFO))
    if debug and not kind & _OCTOLLM:
        packed.append(_pack(error_details_pb2.DebugInfo(
            stack_entries=traceback.format_exception(exc), detail=_safe_text(repr(exc))),
            _DEBUG_INFO))
    envelope = errors_pb2.ErrorEnvelope(error_code=error_code, message=message)
    # One copy of the details: the Struct (readable everywhere) when it is exact, else JSON.
    if flat:
        struct: struct_pb2.Struct | None = _str_struct(details)
    else:
        struct = _struct(details) if _struct_is_exact(details) else None
    if struct is not None:
        envelope.details.CopyFrom(struct)
    else:
        envelope.details_json = json.dumps(details, ensure_ascii=False, separators=(",", ":"))
    if retry_after is not None:
        envelope.retry_after.CopyFrom(_seconds_to_duration(retry_after))
    packed.append(_pack(envelope, _ENVELOPE))
    return status_pb2.Status(code=grpc_code.value[0], message=message, details=packed)


def to_status(
    exc: BaseException,
    *,
    request_id: str | None = None,
    domain: str = DEFAULT_DOMAIN,
    debug: bool = False,
) -> RichStatus:
    """The ``grpc.Status`` to end a call with for ``exc``.

    Its trailing metadata holds ``grpc-status-details-bin`` and, when the error has a
    ``retry_after``, ``grpc-retry-pushback-ms``. An exception outside the hierarchy gives the
    generic message; its text is never put on the wire (``debug=True`` adds ``DebugInfo``
    with the traceback, for development only).
    """
    if not debug or isinstance(exc, e.OctoLLMError):
        fast = _encode_fast(exc, request_id, domain)
        if fast is not None:
            return fast
    return _to_status_slow(exc, request_id, domain, debug)


class StatusTemplate:
    """A status built once without a request id, sent many times with each call's own.

    For a status whose content does not depend on the call (a rate-limit refusal): only
    ``RequestInfo`` differs. :meth:`with_request_id` gives exactly what :func:`to_status`
    gives for the same error and request id, details in the same order, without encoding the
    error again: two serialized messages concatenated parse as one, repeated fields appended
    in order, so the bytes before and after ``RequestInfo`` are kept and the id goes between.
    """

    __slots__ = ("_head", "_status", "_tail")

    def __init__(self, status: RichStatus) -> None:
        """``status``: built by :func:`to_status` without a request id."""
        self._status = status
        proto = status.proto
        # Our envelope is always the last detail, and RequestInfo comes right before it.
        self._head = status_pb2.Status(code=proto.code, message=proto.message,
                                       details=proto.details[:-1]).SerializeToString()
        self._tail = status_pb2.Status(details=proto.details[-1:]).SerializeToString()

    def with_request_id(self, request_id: str | None) -> RichStatus:
        """The status, with ``RequestInfo(request_id)`` when an id is given (cut to
        :data:`MAX_IDENTIFIER_BYTES`, as :func:`to_status` cuts it)."""
        if not request_id:
            return self._status
        info = _pack(_RequestInfo(request_id=_cut(_safe_text(request_id), MAX_IDENTIFIER_BYTES)),
                     _REQUEST_INFO)
        data = (self._head + status_pb2.Status(details=[info]).SerializeToString()
                + self._tail)
        return self._status._replace(trailing_metadata=tuple(
            (key, data) if key == DETAILS_KEY else (key, value)
            for key, value in self._status.trailing_metadata))


def _to_status_slow(
    exc: BaseException, request_id: str | None, domain: str, debug: bool
) -> RichStatus:
    """:func:`to_status` through the generated message classes (any error)."""
    proto, mapping, retry_after = _encode(exc, request_id, domain, debug)
    return _rich_status(mapping.grpc_code, proto.message, proto.SerializeToString(), retry_after)


def _rich_status(
    code: grpc.StatusCode, message: str, data: bytes, retry_after: float | None
) -> RichStatus:
    """The status with its details trailer and, for positive retry advice, the pushback."""
    if retry_after is not None and retry_after > 0:
        pushback = str(int(math.ceil(retry_after * 1000)))
        return RichStatus(code, message, ((DETAILS_KEY, data), (PUSHBACK_KEY, pushback)))
    return RichStatus(code, message, ((DETAILS_KEY, data),))


# -- the fast path: the usual status, assembled from pre-encoded pieces (see _wire) -------

#: Longest retry advice the fast path writes (Duration's range is far larger; the slow path
#: handles the rest, whatever it does with them).
_FAST_MAX_RETRY_S = 1e9
_ld = _wire.length_delimited
_T1, _T2, _T3, _T4 = _wire.tag(1), _wire.tag(2), _wire.tag(3), _wire.tag(4)
_ANY_ERROR_INFO = _wire.any_head(_ERROR_INFO)
_ANY_ENVELOPE = _wire.any_head(_ENVELOPE)
_ANY_BAD_REQUEST = _wire.any_head(_BAD_REQUEST)
_ANY_RESOURCE_INFO = _wire.any_head(_RESOURCE_INFO)
_ANY_PRECONDITION = _wire.any_head(_PRECONDITION_FAILURE)
_ANY_QUOTA_FAILURE = _wire.any_head(_QUOTA_FAILURE)
_ANY_RETRY_INFO = _wire.any_head(_RETRY_INFO)
_ANY_REQUEST_INFO = _wire.any_head(_REQUEST_INFO)
_TASK_TYPE = _wire.field(_T1, _TASK_RESOURCE_TYPE)
_STATE_TYPE = _wire.field(_T1, _STATE_VIOLATION_TYPE)
# google.protobuf.Value's fields: null_value (1, enum), number_value (2, double),
# string_value (3), bool_value (4).
_NULL_VALUE = _wire.tag(1, 0) + _wire.varint(0)
_NUMBER_KEY = _wire.tag(2, 1)
_BOOL_VALUES = (_wire.tag(4, 0) + _wire.varint(0), _wire.tag(4, 0) + _wire.varint(1))
_pack_double = struct.Struct("<d").pack


class _FastPlan(NamedTuple):
    """What the fast path writes the same way for every error of one class and code."""

    mapping: codes.ErrorMapping  # the plan is stale once codes.register() changes it
    kind: int
    status_code: bytes  # Status.code, key and value
    error_info: bytes  # ErrorInfo's reason and domain
    envelope: bytes  # ErrorEnvelope.error_code


_fast_plans: dict[tuple[type, str, str], _FastPlan] = {}


def _fast_plan(cls: type, error_code: Any, mapping: codes.ErrorMapping,
               domain: str) -> _FastPlan | None:
    if not isinstance(error_code, str):
        return None  # whatever the classes make of it, the slow path does
    key = (cls, error_code, domain)
    plan = _fast_plans.get(key)
    if plan is None or plan.mapping is not mapping:  # new, or codes.register() changed it
        plan = _FastPlan(
            mapping, _kind_of(cls), _wire.tag(1, 0) + _wire.varint(mapping.grpc_code.value[0]),
            _wire.field(_T1, error_code) + _wire.field(_T2, domain),
            _wire.field(_T1, error_code),
        )
        if len(_fast_plans) >= 1024:  # classes or codes made at run time: stay bounded
            _fast_plans.clear()
        _fast_plans[key] = plan
    return plan


def _scalar_entries(details: Mapping[str, Any]) -> tuple[bytes, bytes] | None:
    """ErrorInfo.metadata and the envelope's Struct fields for details of scalar values, as
    _build_status writes them; ``None`` when a value needs the slow path (a list or map, an
    integral float or a huge int, which go to ``details_json``, or a non-finite float)."""
    metadata = fields = b""
    for name, value in details.items():
        if type(name) is not str:
            return None
        kind = type(value)
        if kind is str:
            text = value.encode("utf-8")
            encoded = _ld(_T3, text)
        elif kind is bool:
            text = b"true" if value else b"false"
            encoded = _BOOL_VALUES[value]
        elif kind is int:
            if not -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
                return None
            text = str(value).encode()
            encoded = _NUMBER_KEY + _pack_double(value)
        elif kind is float:
            if value.is_integer() or not math.isfinite(value):
                return None
            text = str(value).encode()
            encoded = _NUMBER_KEY + _pack_double(value)
        elif value is None:
            text, encoded = b"null", _NULL_VALUE
        else:
            return None
        # Map entries carry key and value even when empty, as protobuf writes them.
        key = _ld(_T1, name.encode("utf-8"))
        metadata += _ld(_T3, key + _ld(_T2, text))
        fields += _ld(_T1, key + _ld(_T2, encoded))
    return metadata, fields


def _duration(seconds: float) -> bytes:
    # google.protobuf.Duration{seconds, nanos}, as _seconds_to_duration computes them.
    whole, nanos = divmod(int(round(seconds * 1e9)), 1_000_000_000)
    return ((_wire.tag(1, 0) + _wire.varint(whole) if whole else b"")
            + (_wire.tag(2, 0) + _wire.varint(nanos) if nanos else b""))


def _encode_fast(
    exc: BaseException, request_id: str | None, domain: str
) -> RichStatus | None:
    """:func:`to_status` for the usual errors, or ``None``: take the slow path.

    Gives bytes that parse to exactly what :func:`_build_status` builds (property-tested).
    """
    mapping = codes.mapping_for(exc)
    details: Mapping[str, Any]
    if isinstance(exc, e.OctoLLMError):
        details = exc.details
        if not isinstance(details, dict):
            return None
        error_code: Any = exc.error_code
        raw_message: Any = exc.message
        retry_after = _valid_retry_after(exc.retry_after)
        if retry_after is not None and retry_after > _FAST_MAX_RETRY_S:
            return None
    else:  # the generic message, no details (debug, with its DebugInfo, goes slow)
        details, error_code, retry_after = {}, mapping.error_code, None
        raw_message = TIMEOUT_MESSAGE if mapping is codes.BUILTIN_TIMEOUT else GENERIC_MESSAGE
    if len(domain) > MAX_IDENTIFIER_BYTES // 4 or (
            request_id and len(request_id) > MAX_IDENTIFIER_BYTES // 4) or (
            isinstance(error_code, str) and len(error_code) > MAX_IDENTIFIER_BYTES // 4):
        return None  # maybe too long: the slow path cuts them
    plan = _fast_plan(type(exc), error_code, mapping, domain)
    if plan is None:
        return None
    try:
        message = _truncate_message(_safe_text(str(raw_message)))
        entries = _scalar_entries(details)
        if entries is None:
            return None
        metadata, fields = entries
        text = message.encode("utf-8")
        message_field = _ld(_T2, text) if text else b""
        parts = [plan.status_code, message_field,
                 _ld(_T3, _ANY_ERROR_INFO + _ld(_T2, plan.error_info + metadata))]
        kind = plan.kind
        if kind & _VALIDATION:
            # Without a list of violations, BadRequest holds at most the one "field".
            bad_field = details.get("field")
            if bad_field:
                parts.append(_ld(_T3, _ANY_BAD_REQUEST + _ld(_T2, _ld(
                    _T1, _wire.field(_T1, str(bad_field)) + _wire.field(_T2, message)))))
        if kind & _TASK_NOT_FOUND:
            parts.append(_ld(_T3, _ANY_RESOURCE_INFO + _ld(_T2, _TASK_TYPE + _wire.field(
                _T2, _task_name(details)) + (_ld(_T4, text) if text else b""))))
        if kind & _INVALID_STATE:
            parts.append(_ld(_T3, _ANY_PRECONDITION + _ld(_T2, _ld(
                _T1, _STATE_TYPE + _wire.field(_T2, _state_subject(details))
                + (_ld(_T3, text) if text else b"")))))
        if kind & _RATE_LIMIT:
            parts.append(_ld(_T3, _ANY_QUOTA_FAILURE + _ld(_T2, _ld(
                _T1, _wire.field(_T1, _quota_subject(details))
                + (_ld(_T2, text) if text else b"")))))
        if retry_after is not None and retry_after > 0:
            parts.append(_ld(_T3, _ANY_RETRY_INFO + _ld(_T2, _ld(_T1, _duration(retry_after)))))
        if request_id:
            parts.append(_ld(_T3, _ANY_REQUEST_INFO + _ld(
                _T2, _wire.field(_T1, _safe_text(request_id)))))
        envelope = plan.envelope + message_field + _ld(_T3, fields)
        if retry_after is not None:
            envelope += _ld(_T4, _duration(retry_after))
        parts.append(_ld(_T3, _ANY_ENVELOPE + _ld(_T2, envelope)))
        data = b"".join(parts)
    except UnicodeEncodeError:
        return None  # lone surrogates in details: the slow path decides what happens
    if len(data) > TRAILER_BUDGET - _wire_length(message):
        return None  # too big: the slow path shortens the details
    return _rich_status(mapping.grpc_code, message, data, retry_after)


# -- decoding -------------------------------------------------------------------------------


def _integral_to_int(value: Any) -> Any:
    """Undo Struct's doubles: an integral number was an int (the encoder sends JSON otherwise)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _integral_to_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_to_int(v) for v in value]
    return value


_STRUCTURE = re.compile(r'["\[\]{}]')


def _depth_within(text: str, limit: int) -> bool:
    """True unless the JSON ``text`` nests lists and maps deeper than ``limit``.

    One linear scan (strings skipped), so ``json.loads`` never recurses past ``limit``.
    """
    if text.count("[") + text.count("{") <= limit:
        return True
    depth, index = 0, 0
    while True:
        found = _STRUCTURE.search(text, index)
        if found is None:
            return True
        char, index = found.group(), found.end()
        if char == '"':  # skip to the closing quote: one not escaped by a backslash
            while True:
                end = text.find('"', index)
                if end < 0:
                    return True  # unterminated: json.loads rejects it
                back = end - 1
                while back >= index and text[back] == "\\":
                    back -= 1
                index = end + 1
                if (end - 1 - back) % 2 == 0:
                    break
        elif char in "[{":
            depth += 1
            if depth > limit:
                return False
        else:
            depth -= 1


def _json_details(text: str) -> dict[str, Any] | None:
    """The details an envelope's JSON text holds, or ``None`` (over the bounds, or not a map)."""
    if len(text) > MAX_DETAILS_BYTES or len(text.encode("utf-8", "replace")) > MAX_DETAILS_BYTES:
        return None
    if not _depth_within(text, MAX_DETAILS_DEPTH):
        return None
    try:
        loaded = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _depth_of(value: Any, limit: int) -> int:
    """Nesting depth of lists and maps in ``value``, counting no further than ``limit + 1``."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth_of(v, limit - 1) for v in items), default=0)


def _call(method: Any) -> Any:
    try:
        return method()
    except Exception:  # noqa: BLE001 - a broken call object must not break decoding
        return None


def _as_code(value: Any) -> grpc.StatusCode:
    if isinstance(value, grpc.StatusCode):
        return value
    return grpc.StatusCode.UNKNOWN


_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _duration_seconds(duration: Any) -> float:
    seconds = duration.seconds + duration.nanos / 1e9
    return int(seconds) if duration.nanos == 0 else seconds


def _parse_status(trailers: Iterable[tuple[str, Any]] | None) -> status_pb2.Status | None:
    if not trailers:
        return None
    try:
        for key, value in trailers:
            if key == DETAILS_KEY and isinstance(value, bytes):
                return status_pb2.Status.FromString(value)
    except Exception:  # noqa: BLE001 - garbage bytes: decode as if there were no details
        return None
    return None


def from_status_proto(
    status: status_pb2.Status, code: grpc.StatusCode | None = None
) -> e.OctoLLMError:
    """Rebuild the typed error a ``google.rpc.Status`` describes (batch items use this)."""
    wire_code = code or _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return _build_safely(wire_code, status.message, status)


def _build_safely(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None
) -> e.OctoLLMError:
    """:func:`_build`, falling back to the code and message alone if the details break it."""
    try:
        return _build(code, message, status)
    except Exception:  # noqa: BLE001 - decoding never raises, whatever the trailer holds
        return _build(code, message, None)


def _build(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None
) -> e.OctoLLMError:
    reason = ""
    envelope = None
    retry_after: float | None = None
    request_id = ""
    info_metadata: dict[str, str] = {}
    violations: list[dict[str, str]] = []
    if status is not None:
        for detail in status.details:
            try:
                type_url = detail.type_url
                if type_url == _ENVELOPE:
                    envelope = errors_pb2.ErrorEnvelope.FromString(detail.value)
                elif type_url == _ERROR_INFO:
                    info = error_details_pb2.ErrorInfo.FromString(detail.value)
                    reason = info.reason
                    info_metadata = dict(info.metadata)
                elif type_url == _RETRY_INFO:
                    retry = error_details_pb2.RetryInfo.FromString(detail.value)
                    retry_after = _duration_seconds(retry.retry_delay)
                elif type_url == _REQUEST_INFO:
                    request_id = error_details_pb2.RequestInfo.FromString(detail.value).request_id
                elif type_url == _BAD_REQUEST:
                    bad = error_details_pb2.BadRequest.FromString(detail.value)
                    violations = [
                        {"field": v.field, "message": v.description,
                         **({"reason": v.reason} if v.reason else {})}
                        for v in bad.field_violations]
            except Exception:  # noqa: BLE001, S112 - an undecodable detail is skipped, not fatal
                continue

    details: dict[str, Any] | None = None
    error_code = reason
    if envelope is not None:
        error_code = envelope.error_code or reason
        message = envelope.message or message
        if envelope.details_json:
            details = _json_details(envelope.details_json)
        else:
            # protobuf's parser already bounds a Struct's depth (about 100 messages).
            details = _integral_to_int(json_format.MessageToDict(envelope.details))
            if _depth_of(details, MAX_DETAILS_DEPTH) > MAX_DETAILS_DEPTH:
                details = None
        if envelope.HasField("retry_after"):
            retry_after = _duration_seconds(envelope.retry_after)
    if details is None:
        if violations:
            details = {"errors": violations}
        else:
            details = dict(info_metadata)

    cls = codes.class_for_error_code(error_code) if error_code else None
    if cls is None:
        cls = codes.class_for_status_code(code)
    error = cls.restore(message, error_code or None, details, retry_after)
    error._wire_code = code
    if request_id:
        error.request_id = request_id
    error.rich_status = status
    return error


def _pushback_seconds(trailers: Any) -> float | None:
    """``grpc-retry-pushback-ms`` in seconds when it is a plain non-negative integer."""
    try:
        for key, value in trailers or ():
            if key == PUSHBACK_KEY:
                text = value.decode("ascii") if isinstance(value, bytes) else str(value)
                text = text.strip()
                if text.isascii() and text.isdigit() and len(text.lstrip("0")) <= 15:
                    ms = int(text)
                    return ms // 1000 if ms % 1000 == 0 else ms / 1000
                return None
    except Exception:  # noqa: BLE001 - unreadable trailers: no advice
        return None
    return None


def from_rpc_error(err: object) -> e.OctoLLMError:
    """The typed error for a failed call (``grpc.RpcError`` or ``grpc.aio.AioRpcError``).

    The result has the sender's class, message, error_code, details and retry_after, and
    answers ``code()``, ``details()``, ``trailing_metadata()`` like the original call. It
    never raises: anything unreadable decodes as if the details were absent.
    """
    if isinstance(err, e.OctoLLMError):
        return err
    code = _as_code(_call(getattr(err, "code", lambda: None)))
    message = _call(getattr(err, "details", lambda: None))
    if not isinstance(message, str):
        message = "" if message is None else str(message)
    trailers = _call(getattr(err, "trailing_metadata", lambda: None))
    status = _parse_status(trailers)
    # grpcio-status's rule: details whose code differs from the call's are not this call's.
    if status is not None and status.code != code.value[0]:
        status = None
    error = _build_safely(code, message, status)
    if error.retry_after is None:
        # Retry advice sent only as grpc-retry-pushback-ms (not as RetryInfo) is kept too.
        error.retry_after = _pushback_seconds(trailers)
    error._trailing_metadata = trailers
    error._initial_metadata = _call(getattr(err, "initial_metadata", lambda: None))
    debug_string = _call(getattr(err, "debug_error_string", lambda: None))
    error._debug_error_string = debug_string if isinstance(debug_string, str) else ""
    if isinstance(err, BaseException):
        error.__cause__ = err
    return error
