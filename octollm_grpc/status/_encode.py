"""OctoLLMError -> ``google.rpc.Status``: what the server sends for a failed call.

A status holds, in this order, ``ErrorInfo`` (reason = error_code), the standard details the
error's class adds (`status_details`: ``BadRequest``,
``ResourceInfo``, ``QuotaFailure``, ...), ``RetryInfo`` for positive retry advice,
``RequestInfo`` when the request id is known, ``DebugInfo`` only when asked for, and last our
``ErrorEnvelope`` for a lossless round trip. The status's code and message come from the same
values as the call's, so ``grpc_status.rpc_status.from_call`` accepts it.

One encoder, on the generated message classes. What is the same for every error of a class,
code and domain (``Status.code``, ``ErrorInfo``'s reason and domain, the envelope's code) is
serialised once and kept; protobuf parses concatenated serialisations as one message, fields
in order, so each call serialises only its own part, once, and checks the size on the bytes.
Maps are written sorted (protobuf's deterministic serialisation), so equal errors always give
equal bytes. Details too big for the trailer are shortened and the status encoded again.
"""

from __future__ import annotations

import json
import logging
import math
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import grpc
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc import codes
from octollm_grpc import errors as e
from octollm_grpc._proto.octollm.errors.v1 import errors_pb2
from octollm_grpc.errors import _base
from octollm_grpc.status import _details
from octollm_grpc.status._limits import (
    DEFAULT_DOMAIN,
    DETAILS_KEY,
    LAST_RESORT_MESSAGE_BYTES,
    PUSHBACK_KEY,
    TIMEOUT_MESSAGE,
    TRAILER_BUDGET,
    TYPE_PREFIX,
    RichStatus,
    identifier,
    safe_text,
    truncate_message,
    wire_length,
)
from octollm_grpc.status._limits import GENERIC_MESSAGE as _GENERIC

__all__ = ["StatusTemplate", "to_status", "to_status_proto", "type_url"]

_log = logging.getLogger("octollm_grpc.status")

_Status = status_pb2.Status
_Any = any_pb2.Any
_ErrorInfo = error_details_pb2.ErrorInfo
_RetryInfo = error_details_pb2.RetryInfo
_RequestInfo = error_details_pb2.RequestInfo
_Envelope = errors_pb2.ErrorEnvelope


def type_url(message_class: type[Message] | Message) -> str:
    """The ``Any.type_url`` a message of this class is packed under."""
    return TYPE_PREFIX + message_class.DESCRIPTOR.full_name


_ERROR_INFO = type_url(_ErrorInfo)
# A raised error answers .domain and .metadata as this module would send them.
_base.install_error_info(DEFAULT_DOMAIN, _details.metadata)
_RETRY_INFO = type_url(_RetryInfo)
_REQUEST_INFO = type_url(_RequestInfo)
_DEBUG_INFO = type_url(error_details_pb2.DebugInfo)
_ENVELOPE = type_url(_Envelope)


# -- the class's own details -------------------------------------------------------------------


_ANY_URL = type_url(_Any)
_urls: dict[type, str] = {_Any: _ANY_URL}


def _url_of(cls: type[Message]) -> str:
    url = _urls.get(cls)
    if url is None:
        url = _urls[cls] = type_url(cls)  # generated classes: a bounded set
    return url


def _packed(messages: Sequence[Message]) -> list[tuple[str, bytes]]:
    """``(type_url, value)`` of each detail; an ``Any`` is sent as it is."""
    out = []
    for message in messages:
        url = _urls.get(type(message))
        if url is not None and url is not _ANY_URL:  # a generated class seen before
            out.append((url, message.SerializeToString(deterministic=True)))
        elif isinstance(message, _Any):
            out.append((message.type_url, message.value))
        elif isinstance(message, Message):
            out.append((_url_of(type(message)),
                        message.SerializeToString(deterministic=True)))
        else:
            raise TypeError(f"status_details() gave {type(message).__name__}, not a Message")
    return out


def _class_details(error: e.OctoLLMError) -> list[tuple[str, bytes]]:
    """What ``error.status_details()`` adds, packed; nothing (and a warning logged, with the
    traceback) when the hook raises or gives something that is not a message: the call still
    ends with the error's own code and message."""
    try:
        return _packed(error.status_details())
    except Exception:  # noqa: BLE001 - a broken hook must not turn the error into INTERNAL
        _log.warning("%s.status_details() failed; its details are left out of the status",
                     type(error).__qualname__, exc_info=True)
        return []


def _view(error: e.OctoLLMError, message: str, details: Mapping[str, Any]) -> e.OctoLLMError:
    """A copy of ``error`` with the message and details the status carries, for its hook."""
    view = error.restore(message, error.error_code, details, error.retry_after)
    view.__dict__.update({k: v for k, v in error.__dict__.items()
                          if k not in ("message", "details")})
    return view


# -- building a status -------------------------------------------------------------------------


class _Plan(NamedTuple):
    """The pieces of a status that are the same for every error of one class, code and domain."""

    mapping: codes.ErrorMapping  # the plan is stale once codes.register() changes it
    head: bytes  # Status.code
    error_info: bytes  # ErrorInfo's reason and domain
    envelope: bytes  # ErrorEnvelope.error_code


_plans: dict[tuple[type, str, str], _Plan] = {}


def _plan(cls: type, error_code: str, mapping: codes.ErrorMapping, domain: str) -> _Plan:
    """The plan for errors of ``cls`` with this (raw) error code and domain."""
    key = (cls, error_code, domain)
    plan = _plans.get(key)
    if plan is None or plan.mapping is not mapping:  # new, or codes.register() changed it
        code = identifier(error_code)
        plan = _Plan(
            mapping,
            _Status(code=mapping.grpc_code.value[0]).SerializeToString(),
            _ErrorInfo(reason=code, domain=identifier(domain)).SerializeToString(),
            _Envelope(error_code=code).SerializeToString(),
        )
        if len(_plans) >= 1024:  # classes or codes made at run time: stay bounded
            _plans.clear()
        _plans[key] = plan
    return plan


_retries: dict[float, tuple[bytes, bytes]] = {}


def _retry(seconds: float) -> tuple[bytes, bytes]:
    """``RetryInfo`` for this advice, and the envelope's ``retry_after`` field, serialised.

    Advice repeats (a limiter's window, a breaker's timeout): each is built once.
    """
    pieces = _retries.get(seconds)
    if pieces is None:
        nanos = int(round(seconds * 1e9))
        info, envelope = _RetryInfo(), _Envelope()
        info.retry_delay.FromNanoseconds(nanos)
        envelope.retry_after.FromNanoseconds(nanos)
        pieces = (info.SerializeToString(), envelope.SerializeToString())
        if len(_retries) >= 1024:  # advice computed per call (a deadline's rest): stay bounded
            _retries.clear()
        _retries[seconds] = pieces
    return pieces


def _build(
    plan: _Plan,
    message: str,
    details: Mapping[str, Any],
    scalars: dict[str, str] | None,
    extra: list[tuple[str, bytes]],
    retry_after: float | None,
    request_id: str | None,
    debug_info: error_details_pb2.DebugInfo | None,
) -> bytes:
    """The serialised status; ``scalars``: what ``details.scalar_metadata`` gave for
    ``details`` (``None``: take the general walk)."""
    status = _Status(message=message)
    add = status.details.add
    metadata = _details.metadata(details) if scalars is None else scalars
    info = _ErrorInfo()
    if metadata:
        entries = info.metadata
        for key, text in metadata.items():
            entries[key] = text  # cheaper than the constructor's map argument
    add(type_url=_ERROR_INFO,
        value=plan.error_info + info.SerializeToString(deterministic=True))
    for url, packed in extra:
        add(type_url=url, value=packed)
    retry_info, retry_field = _retry(retry_after) if retry_after is not None else (b"", b"")
    if retry_after is not None and retry_after > 0:
        add(type_url=_RETRY_INFO, value=retry_info)
    if request_id:
        add(type_url=_REQUEST_INFO, value=_RequestInfo(request_id=request_id).SerializeToString())
    if debug_info is not None:
        add(type_url=_DEBUG_INFO, value=debug_info.SerializeToString())
    envelope = _Envelope(message=message)
    # One copy of the details: the Struct (readable everywhere) when it is exact, else JSON.
    if scalars is not None:
        envelope.details.SetInParent()  # sent even when empty, as before
        fields = envelope.details.fields
        for key, value in details.items():
            if type(value) is str:
                fields[key].string_value = value
            elif value is None:
                fields[key].null_value = struct_pb2.NULL_VALUE
            elif type(value) is bool:
                fields[key].bool_value = value
            else:
                fields[key].number_value = value
    elif not _details.struct_is_exact(details) or not _struct_update(envelope, details):
        # details_json is field 5: it goes after retry_after (4), in a piece of its own.
        retry_field += _Envelope(details_json=json.dumps(
            details, ensure_ascii=False, separators=(",", ":"))).SerializeToString()
    add(type_url=_ENVELOPE, value=plan.envelope
        + envelope.SerializeToString(deterministic=True) + retry_field)
    return plan.head + status.SerializeToString()


def _struct_update(envelope: errors_pb2.ErrorEnvelope, details: Mapping[str, Any]) -> bool:
    try:
        envelope.details.update(details)
    except (ValueError, TypeError, OverflowError):
        envelope.ClearField("details")
        return False
    return True


_generics: dict[_Plan, tuple[_Encoding, StatusTemplate]] = {}


def _generic(plan: _Plan, message: str, request_id: str | None) -> _Encoding:
    """The status of an exception outside the hierarchy, built once per plan."""
    found = _generics.get(plan)
    if found is None:
        data = _build(plan, message, {}, {}, [], None, None, None)
        base = _Encoding(data, message, plan.mapping, None)
        found = (base, StatusTemplate(_rich_status(plan.mapping.grpc_code, message, data, None)))
        if len(_generics) >= 64:  # one per code and domain in practice
            _generics.clear()
        _generics[plan] = found
    base, template = found
    if not request_id:
        return base
    return base._replace(data=template.data(request_id))


class _Unencodable(Exception):
    """Stands for an error of the hierarchy whose message or details cannot be rendered."""


class _Encoding(NamedTuple):
    """What [`to_status`][octollm_grpc.status.to_status] sends, worked out once per error."""

    data: bytes
    message: str
    mapping: codes.ErrorMapping
    retry_after: float | None


def _encode(
    exc: BaseException, request_id: str | None, domain: str, debug: bool
) -> _Encoding:
    try:
        return _encode_strict(exc, request_id, domain, debug)
    except Exception:  # noqa: BLE001 - a message, detail or code whose __str__ raises
        # Nothing of it can be trusted on the wire: it goes as an unexpected exception.
        return _unencodable(request_id, domain)


def _unencodable(request_id: str | None, domain: str) -> _Encoding:
    unexpected = codes.UNEXPECTED
    return _generic(_plan(_Unencodable, unexpected.error_code, unexpected, domain), _GENERIC,
                    identifier(request_id) if request_id else None)


def _encode_strict(
    exc: BaseException, request_id: str | None, domain: str, debug: bool
) -> _Encoding:
    mapping = codes.mapping_for(exc)
    if request_id:
        request_id = identifier(request_id)
    if isinstance(exc, e.OctoLLMError):
        return _encode_error(exc, mapping, request_id, domain)
    message = TIMEOUT_MESSAGE if mapping is codes.BUILTIN_TIMEOUT else _GENERIC
    plan = _plan(type(exc), mapping.error_code, mapping, domain)
    if not debug:
        # Nothing of an unexpected exception's status depends on it: only the request id.
        return _generic(plan, message, request_id)
    debug_info = error_details_pb2.DebugInfo(
        stack_entries=traceback.format_exception(exc), detail=safe_text(repr(exc)))
    data = _build(plan, message, {}, {}, [], None, request_id, debug_info)
    return _Encoding(data, message, mapping, None)


def _encode_error(
    exc: e.OctoLLMError, mapping: codes.ErrorMapping, request_id: str | None, domain: str
) -> _Encoding:
    """The status of an error of the hierarchy: its message, details and class details."""
    error_code, raw, details = exc.error_code, exc.message, exc.details
    declared = getattr(type(exc), "domain", None)
    if type(declared) is str and declared:
        domain = declared  # a class declared in an API's protos names its own domain
    message = truncate_message(safe_text(str(raw)))
    retry_after = _details.valid_retry_after(exc.retry_after)
    plan = _plan(type(exc), error_code if type(error_code) is str else str(error_code),
                 mapping, domain)
    scalars = _details.scalar_metadata(details) if isinstance(details, dict) else None
    safe = details if scalars is not None else _details.jsonable(details)

    def extra(data: Mapping[str, Any], text: str) -> list[tuple[str, bytes]]:
        # The hook sees what the status carries: its message and details as sent.
        if text is raw and (data is details or data == details):
            return _class_details(exc)
        return _class_details(_view(exc, text, data))

    data = _build(plan, message, safe, scalars, extra(safe, message), retry_after, request_id,
                  None)
    room = TRAILER_BUDGET - wire_length(message)
    if len(data) <= room:
        return _Encoding(data, message, mapping, retry_after)
    for items in (32, 8, 2, 0):
        shortened = {**_details.shortened(safe, items), "_truncated": True}
        data = _build(plan, message, shortened, None, extra(shortened, message), retry_after,
                      request_id, None)
        if len(data) <= room:
            return _Encoding(data, message, mapping, retry_after)
    least = {"_truncated": True}
    data = _build(plan, message, least, None, extra(least, message), retry_after,
                  request_id, None)
    if len(data) <= room:
        return _Encoding(data, message, mapping, retry_after)
    # The message itself is repeated in several details: a short one fits, as every other
    # field is bounded by now; a class's details that are still too big are left out.
    message = truncate_message(message, LAST_RESORT_MESSAGE_BYTES)
    data = _build(plan, message, least, None, extra(least, message), retry_after,
                  request_id, None)
    if len(data) > TRAILER_BUDGET - wire_length(message):
        data = _build(plan, message, least, None, [], retry_after, request_id, None)
    return _Encoding(data, message, mapping, retry_after)


def _rich_status(
    code: grpc.StatusCode, message: str, data: bytes, retry_after: float | None
) -> RichStatus:
    """The status with its details trailer and, for positive retry advice, the pushback."""
    if retry_after is not None and retry_after > 0:
        pushback = str(int(math.ceil(retry_after * 1000)))
        return RichStatus(code, message, ((DETAILS_KEY, data), (PUSHBACK_KEY, pushback)))
    return RichStatus(code, message, ((DETAILS_KEY, data),))


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
    with the traceback, for development only). It never raises for any ``Exception``: a
    failing ``status_details()`` hook only loses its own details, and an error whose message,
    details or code cannot be rendered (a ``__str__`` that raises) is sent as an unexpected
    exception (``INTERNAL``, the generic message).

    Args:
        exc: Any exception.
        request_id: Put in ``RequestInfo`` (and so seen by the caller) when given.
        domain: ``ErrorInfo.domain``, except for a class that names its own (a non-empty
            ``domain`` class attribute, as the classes generated from errors declared in
            protos do).
        debug: Add the traceback of an unexpected exception as ``DebugInfo``.

    Returns:
        A ``grpc.Status`` (code, details, trailing metadata).
    """
    data, message, mapping, retry_after = _encode(exc, request_id, domain, debug)
    return _rich_status(mapping.grpc_code, message, data, retry_after)


def to_status_or_raise(
    exc: BaseException,
    *,
    request_id: str | None = None,
    domain: str = DEFAULT_DOMAIN,
    debug: bool = False,
) -> RichStatus:
    """[`to_status`][octollm_grpc.status.to_status], but an error that cannot be rendered raises
    what rendering raised.

    For the server stack, which then sends `unencodable_status` and logs the failure as
    the unexpected exception it is.
    """
    data, message, mapping, retry_after = _encode_strict(exc, request_id, domain, debug)
    return _rich_status(mapping.grpc_code, message, data, retry_after)


def unencodable_status(request_id: str | None, domain: str = DEFAULT_DOMAIN) -> RichStatus:
    """What [`to_status`][octollm_grpc.status.to_status] sends for an error whose message or details
    cannot be rendered."""
    data, message, mapping, retry_after = _unencodable(request_id, domain)
    return _rich_status(mapping.grpc_code, message, data, retry_after)


def to_status_proto(
    exc: BaseException,
    *,
    request_id: str | None = None,
    domain: str = DEFAULT_DOMAIN,
    debug: bool = False,
) -> status_pb2.Status:
    """The ``google.rpc.Status`` for ``exc`` (for per-item results of batch calls too).

    It fits gRPC's default 8 KiB metadata limit: a message over ``MAX_MESSAGE_BYTES`` is
    cut, and details too large for the trailer are shortened (lists and strings cut, with
    ``"_truncated": true`` added) rather than lost whole to a ``RESOURCE_EXHAUSTED`` at the client.
    """
    return _Status.FromString(_encode(exc, request_id, domain, debug).data)


class StatusTemplate:
    """A status built once without a request id, sent many times with each call's own.

    For a status whose content does not depend on the call (a rate-limit refusal): only
    ``RequestInfo`` differs. `with_request_id` gives exactly what
    [`to_status`][octollm_grpc.status.to_status]
    gives for the same error and request id, details in the same order, without encoding the
    error again: two serialized messages concatenated parse as one, repeated fields appended
    in order, so the bytes before and after ``RequestInfo`` are kept and the id goes between.
    """

    __slots__ = ("_head", "_status", "_tail")

    def __init__(self, status: RichStatus) -> None:
        """``status``: built by [`to_status`][octollm_grpc.status.to_status] without a request
        id."""
        self._status = status
        proto = status.proto
        # Our envelope is always the last detail, and RequestInfo comes right before it.
        self._head = _Status(code=proto.code, message=proto.message,
                             details=proto.details[:-1]).SerializeToString()
        self._tail = _Status(details=proto.details[-1:]).SerializeToString()

    def with_request_id(self, request_id: str | None) -> RichStatus:
        """The status, with ``RequestInfo(request_id)`` when an id is given (cut to
        ``MAX_IDENTIFIER_BYTES``, as [`to_status`][octollm_grpc.status.to_status] cuts it)."""
        if not request_id:
            return self._status
        data = self.data(request_id)
        return self._status._replace(trailing_metadata=tuple(
            (key, data) if key == DETAILS_KEY else (key, value)
            for key, value in self._status.trailing_metadata))

    def data(self, request_id: str) -> bytes:
        """The ``grpc-status-details-bin`` bytes with ``RequestInfo(request_id)``."""
        status = _Status()
        status.details.add(type_url=_REQUEST_INFO,
                           value=_RequestInfo(request_id=identifier(request_id)).SerializeToString())
        return self._head + status.SerializeToString() + self._tail
