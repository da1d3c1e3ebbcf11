"""What a rich status may hold and how big it may be, and the status type itself.

The bounds keep a status inside gRPC's default 8 KiB metadata limit (grpc core drops a trailer
it cannot send) and keep a decoder from chewing on hostile input; the text helpers make any
Python string something protobuf and gRPC accept.
"""

from __future__ import annotations

from typing import NamedTuple

import grpc
from google.rpc import status_pb2

# What octollm_grpc.status exports; the other bounds are importable from there by name.
__all__ = [
    "DEFAULT_DOMAIN",
    "DETAILS_KEY",
    "GENERIC_MESSAGE",
    "MAX_DETAILS_BYTES",
    "MAX_DETAILS_DEPTH",
    "PUSHBACK_KEY",
    "RichStatus",
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
LAST_RESORT_MESSAGE_BYTES = 128
#: Deepest nesting of lists and maps decoded from a status's details; deeper details are left
#: out (the error keeps its class, code and message).
MAX_DETAILS_DEPTH = 64
#: Longest JSON text of details decoded (far over what fits in a trailer).
MAX_DETAILS_BYTES = 64 * 1024
#: Room for grpc-message plus grpc-status-details-bin, under gRPC's default 8 KiB metadata limit.
TRAILER_BUDGET = 7 * 1024
#: What a packed detail's ``Any.type_url`` starts with.
TYPE_PREFIX = "type.googleapis.com/"


#: The one encoding of gRPC text (a name, so the functions below carry no codec literal).
_UTF8 = "utf-8"


class RichStatus(NamedTuple):
    """A ``grpc.Status`` (code, details, trailing_metadata); `proto` is the
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


def safe_text(text: str) -> str:
    """``text`` as valid UTF-8 (lone surrogates would make protobuf and gRPC reject it); the
    same object when it already is."""
    if text.isascii():
        return text
    try:
        text.encode(_UTF8)
        return text
    except UnicodeEncodeError:
        return text.encode(_UTF8, "replace").decode(_UTF8)


def truncate_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``message`` cut to ``limit`` UTF-8 bytes, ending in "..." when cut; the same object
    when it fits."""
    if message.isascii() and len(message) <= limit:
        return message  # one byte per character: no need to encode to measure it
    data = message.encode(_UTF8)
    if len(data) <= limit:
        return message
    return data[: limit - 3].decode(_UTF8, "ignore") + "..."


def cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary)."""
    if len(text) <= limit // 4:
        return text  # four bytes per character at most
    data = text.encode(_UTF8)
    return text if len(data) <= limit else data[:limit].decode(_UTF8, "ignore")


def identifier(text: str) -> str:
    """An error code, domain or request id as written to a status: valid UTF-8, at most
    `MAX_IDENTIFIER_BYTES` (identifiers are short by nature; absurd ones are cut so the
    status still fits)."""
    return cut(safe_text(text), MAX_IDENTIFIER_BYTES)


def wire_length(message: str) -> int:
    """Bytes ``grpc-message`` takes: gRPC percent-encodes all but printable ASCII."""
    if message.isascii() and message.isprintable() and "%" not in message:
        return len(message)
    return sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in message.encode(_UTF8))
