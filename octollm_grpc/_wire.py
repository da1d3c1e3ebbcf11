"""Protobuf wire format, written by hand for the messages of the usual rich status.

The generated message classes build a tree of objects, pack each detail into an ``Any`` and
serialize it all. For the usual statuses (details of scalar values, with or without retry
advice, and the generic status of unexpected exceptions) :func:`octollm_grpc.status.to_status`
assembles the same ``google.rpc.Status`` bytes from pre-encoded pieces made with these
helpers instead, several times faster. The two paths are checked against each other by
property tests (``tests/errors/test_wire_fast_path.py``): every byte string written this way
parses to the message the generated classes build.

These helpers write keys, varints and length-delimited fields; the status module adds the
one 64-bit field it needs (``google.protobuf.Value.number_value``) with ``struct``.
"""

from __future__ import annotations

__all__ = ["any_head", "field", "length_delimited", "tag", "varint"]

_SMALL = [bytes((i,)) for i in range(128)]


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a base-128 varint."""
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(number: int, wire_type: int = 2) -> bytes:
    """The key of field ``number`` (wire type 2, length-delimited, unless given)."""
    return varint(number << 3 | wire_type)


def length_delimited(key: bytes, payload: bytes) -> bytes:
    """One length-delimited field: ``key``, the length of ``payload``, ``payload``."""
    size = len(payload)
    return key + (_SMALL[size] if size < 128 else varint(size)) + payload


def field(key: bytes, text: str) -> bytes:
    """A ``string`` field, left out when empty (as proto3 serializers do)."""
    return length_delimited(key, text.encode("utf-8")) if text else b""


def any_head(type_url: str) -> bytes:
    """``google.protobuf.Any.type_url`` encoded, to put before each packed value."""
    return field(tag(1), type_url)
