"""``google.rpc.Status`` -> OctoLLMError: what the client makes of a failed call.

Decoding never raises: a status without our details, with unknown detail types, or with
garbage in ``grpc-status-details-bin`` becomes a sensible class for its code. The details a
class adds on the server (``ResourceInfo``, ``QuotaFailure``, ...) come back from the decoded
error's ``status_details()``, unpacked when the default descriptor pool knows their type.
Retry advice (``RetryInfo``, the envelope's ``retry_after``, ``grpc-retry-pushback-ms``) is
clamped to ``[0, MAX_RETRY_AFTER]``; an invalid ``Duration`` is no advice at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pool, duration_pb2, json_format, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from octollm_grpc import codes
from octollm_grpc import errors as e
from octollm_grpc._proto.octollm.errors.v1 import errors_pb2
from octollm_grpc.status._encode import type_url
from octollm_grpc.status._limits import (
    DETAILS_KEY,
    MAX_DETAILS_BYTES,
    MAX_DETAILS_DEPTH,
    MAX_RETRY_AFTER,
    PUSHBACK_KEY,
    TYPE_PREFIX,
)

__all__ = ["from_rpc_error", "from_status_proto"]

_ERROR_INFO = type_url(error_details_pb2.ErrorInfo)
_RETRY_INFO = type_url(error_details_pb2.RetryInfo)
_REQUEST_INFO = type_url(error_details_pb2.RequestInfo)
_BAD_REQUEST = type_url(error_details_pb2.BadRequest)
_DEBUG_INFO = type_url(error_details_pb2.DebugInfo)
_ENVELOPE = type_url(errors_pb2.ErrorEnvelope)
#: The details the encoder writes itself for every error; the rest are the class's own.
_FRAMEWORK = frozenset((_ERROR_INFO, _RETRY_INFO, _REQUEST_INFO, _DEBUG_INFO, _ENVELOPE))


_classes: dict[str, type[Message] | None] = {}


def _message_class(url: str) -> type[Message] | None:
    """The generated class of a packed detail's type, when the default pool knows it."""
    try:
        return _classes[url]
    except KeyError:
        pass
    found: type[Message] | None = None
    if url.startswith(TYPE_PREFIX):
        try:
            descriptor = descriptor_pool.Default().FindMessageTypeByName(url[len(TYPE_PREFIX):])
            found = message_factory.GetMessageClass(descriptor)
        except KeyError:
            found = None
    if len(_classes) >= 1024:  # type names from the wire: stay bounded
        _classes.clear()
    _classes[url] = found
    return found


def _unpacked(detail: any_pb2.Any) -> Message:
    """A received detail as its generated message, or the ``Any`` itself (unknown type, or
    bytes that do not parse as it)."""
    cls = _message_class(detail.type_url)
    if cls is not None:
        try:
            return cls.FromString(detail.value)
        except Exception:  # noqa: BLE001, S110 - undecodable: kept packed, sent on as it came
            pass
    kept = any_pb2.Any()
    kept.CopyFrom(detail)
    return kept


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


def _ask(err: object, name: str) -> Any:
    """``err.<name>()``, or ``None`` when it has no such method or the call fails."""
    try:
        return getattr(err, name)()
    except Exception:  # noqa: BLE001 - a broken call object must not break decoding
        return None


def _as_code(value: Any) -> grpc.StatusCode:
    if isinstance(value, grpc.StatusCode):
        return value
    return grpc.StatusCode.UNKNOWN


_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


#: google.protobuf.Duration's own bounds: anything outside is not a Duration.
_DURATION_SECONDS = 315_576_000_000
_DURATION_NANOS = 999_999_999


def _duration_seconds(duration: duration_pb2.Duration) -> float | None:
    """Retry advice in seconds, within ``[0, MAX_RETRY_AFTER]``; ``None`` for an invalid
    Duration (out of its range, or seconds and nanos of opposite signs)."""
    seconds, nanos = duration.seconds, duration.nanos
    if (abs(seconds) > _DURATION_SECONDS or abs(nanos) > _DURATION_NANOS
            or (seconds < 0 < nanos) or (nanos < 0 < seconds)):
        return None
    if seconds < 0 or nanos < 0:
        return 0  # "retry after a negative time" is "retry now"
    if nanos == 0:
        return min(seconds, MAX_RETRY_AFTER)
    return min(seconds + nanos / 1e9, MAX_RETRY_AFTER)


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
    """`_build`, falling back to the code and message alone if the details break it."""
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
    info: error_details_pb2.ErrorInfo | None = None
    violations: list[dict[str, str]] = []
    received: list[Message] = []
    if status is not None:
        for detail in status.details:
            try:
                url = detail.type_url
                if url not in _FRAMEWORK:
                    received.append(_unpacked(detail))
                if url == _ENVELOPE:
                    envelope = errors_pb2.ErrorEnvelope.FromString(detail.value)
                elif url == _ERROR_INFO:
                    info = error_details_pb2.ErrorInfo.FromString(detail.value)
                    reason = info.reason
                    info_metadata = dict(info.metadata)
                elif url == _RETRY_INFO:
                    retry = error_details_pb2.RetryInfo.FromString(detail.value)
                    retry_after = _duration_seconds(retry.retry_delay)
                    if retry_after is None:
                        continue  # an invalid Duration is no advice
                elif url == _REQUEST_INFO:
                    request_id = error_details_pb2.RequestInfo.FromString(detail.value).request_id
                elif url == _BAD_REQUEST:
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
            sent = _duration_seconds(envelope.retry_after)
            if sent is not None:  # an invalid one leaves RetryInfo's advice, if any
                retry_after = sent
    if details is None:
        if violations:
            details = {"errors": violations}
        else:
            details = dict(info_metadata)

    cls = codes.class_for_error_code(error_code) if error_code else None
    if cls is not None and issubclass(cls, e.CircuitOpenError):
        # CircuitOpenError means "our own breaker refused, nothing was sent": a peer's
        # CIRCUIT_OPEN (its breaker, or a server pretending) is its parent class instead,
        # error_code and advice kept, so no handler mistakes it for ours.
        cls = e.ResourceError
    if cls is None and code is grpc.StatusCode.RESOURCE_EXHAUSTED and status is None:
        too_large = _size_refusal(message)
        if too_large is not None:
            cls, message, details = too_large
            error_code = cls.error_code
    if cls is None:
        cls = codes.class_for_status_code(code)
    error = cls.restore(message, error_code or None, details, retry_after)
    error._wire_code = code
    error._received_details = tuple(received)
    error._error_info = ((info.reason, info.domain, info_metadata) if info is not None
                         else (None, None, {}))
    if request_id:
        error.request_id = request_id
    error.rich_status = status
    return error


# grpc core's own size refusals (a bare RESOURCE_EXHAUSTED): "SERVER: Received message larger
# than max (10000005 vs. 4194304)" when the server refused the request, "CLIENT: ..." (inside
# "Stream removed (...)" on the sync stack) when this client refused the response; "received
# metadata size exceeds hard limit (value length 20000 vs. 16384)" (or "soft limit", refused
# at random between the two) for metadata.
_MESSAGE_TOO_LARGE = re.compile(
    r"(?:\b(SERVER|CLIENT): )?(?:Received|Sent) message larger than max "
    r"\((\d{1,20}) vs\. (\d{1,20})\)")
_METADATA_TOO_LARGE = re.compile(
    r"metadata size exceeds (?:hard|soft) limit "
    r"\((?:value length )?(\d{1,20}) vs\. (\d{1,20})\)")
_WHOSE_LIMIT = {"SERVER": ("request ", "the server's"), "CLIENT": ("response ", "this client's")}


def _size_refusal(
    message: str,
) -> tuple[type[e.OctoLLMError], str, dict[str, Any]] | None:
    """The class, message (in our words) and details for grpc core's size refusal, if it is one.

    Resending the same call cannot succeed, so these are not the retryable
    ``ResourceExhaustedError`` a quota is; grpc's text is replaced, the sizes kept.
    """
    found = _MESSAGE_TOO_LARGE.search(message)
    if found is not None:
        side, size, limit = found.groups()
        what, whose = _WHOSE_LIMIT.get(side or "", ("", "the receiver's"))
        return (e.catalog.MessageTooLargeError,
                f"The {what}message is larger than {whose} limit ({size} > {limit} bytes)",
                {"size": int(size), "limit": int(limit)})
    found = _METADATA_TOO_LARGE.search(message)
    if found is not None:
        size, limit = found.groups()
        return (e.catalog.MetadataTooLargeError,
                f"The call's metadata is larger than the receiver's limit ({size} > {limit} bytes)",
                {"size": int(size), "limit": int(limit)})
    return None


def _pushback_seconds(trailers: Any) -> float | None:
    """``grpc-retry-pushback-ms`` in seconds (at most ``MAX_RETRY_AFTER``) when it is a plain
    non-negative integer."""
    try:
        for key, value in trailers or ():
            if key == PUSHBACK_KEY:
                text = value.decode("ascii") if isinstance(value, bytes) else str(value)
                text = text.strip()
                if text.isascii() and text.isdigit() and len(text.lstrip("0")) <= 15:
                    ms = int(text)
                    seconds = ms // 1000 if ms % 1000 == 0 else ms / 1000
                    return min(seconds, MAX_RETRY_AFTER)
                return None
    except Exception:  # noqa: BLE001 - unreadable trailers: no advice
        return None
    return None


def from_rpc_error(err: object) -> e.OctoLLMError:
    """The typed error for a failed call (``grpc.RpcError`` or ``grpc.aio.AioRpcError``).

    The result has the sender's class, message, error_code, details and retry_after, and
    answers ``code()``, ``details()``, ``trailing_metadata()`` like the original call. It
    never raises: anything unreadable decodes as if the details were absent.

    Args:
        err: The failed call's exception (``grpc.RpcError``, ``grpc.aio.AioRpcError`` or any
            object with ``code()`` / ``details()`` / ``trailing_metadata()``).

    Returns:
        The typed error, an `OctoLLMError` subclass.
    """
    if isinstance(err, e.OctoLLMError):
        return err
    code = _as_code(_ask(err, "code"))
    message = _ask(err, "details")
    if not isinstance(message, str):
        message = "" if message is None else str(message)
    trailers = _ask(err, "trailing_metadata")
    status = _parse_status(trailers)
    # grpcio-status's rule: details whose code differs from the call's are not this call's.
    if status is not None and status.code != code.value[0]:
        status = None
    error = _build_safely(code, message, status)
    if error.retry_after is None:
        # Retry advice sent only as grpc-retry-pushback-ms (not as RetryInfo) is kept too.
        error.retry_after = _pushback_seconds(trailers)
    error._trailing_metadata = trailers
    error._initial_metadata = _ask(err, "initial_metadata")
    debug_string = _ask(err, "debug_error_string")
    error._debug_error_string = debug_string if isinstance(debug_string, str) else ""
    if isinstance(err, BaseException):
        error.__cause__ = err
    return error
