"""Protobuf wire format, written by hand for the messages of the common rich status.

The generated message classes build a tree of objects, pack each detail into an ``Any`` and
serialize it all: about 25 µs per failed call. For the shape nearly every error has (string
details, no retry advice) :func:`octollm_grpc.status.to_status` assembles the same
``google.rpc.Status`` bytes here from pre-encoded pieces instead, in a few µs. The two paths
are checked against each other by property tests (``tests/errors/test_wire_fast_path.py``):
every byte string written here parses to the message the generated classes build.

Only length-delimited fields (wire type 2) and varints are needed.
"""

from __future__ import annotations

from collections.abc import Mapping

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


def string_map(key: bytes, entries: Mapping[str, str]) -> bytes:
    """A ``map<string, string>`` field: one entry message per pair (key 1, value 2)."""
    k, v = tag(1), tag(2)
    return b"".join(
        length_delimited(key, field(k, name) + field(v, value))
        for name, value in entries.items()
    )
