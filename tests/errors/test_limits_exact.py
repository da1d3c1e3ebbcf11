"""status.limits' small functions at their exact boundaries (bytes, not characters)."""

from __future__ import annotations

import builtins

import grpc
import pytest

from octollm_grpc.http import to_http
from octollm_grpc.status._limits import (
    DETAILS_KEY,
    MAX_IDENTIFIER_BYTES,
    MAX_MESSAGE_BYTES,
    TIMEOUT_MESSAGE,
    RichStatus,
    cut,
    identifier,
    safe_text,
    truncate_message,
    wire_length,
)


@pytest.mark.parametrize(("message", "length"), [
    ("", 0), ("abc", 3), ("a b", 3), ("100%", 6), ("%", 3), ("%%", 6), ("a\nb", 5),
    ("\t", 3), ("\x7f", 3), ("~", 1), (" ", 1), ("é", 6), ("日本", 18), ("😀", 12),
    ("a b\n", 6), (" \x1f!", 5),
    ("a%é", 1 + 3 + 6),
])
def test_wire_length_counts_percent_encoding(message: str, length: int) -> None:
    """Printable ASCII but '%' is one byte; '%', controls and each UTF-8 byte are three."""
    assert wire_length(message) == length


def test_truncate_message_at_the_exact_limit() -> None:
    """A message of exactly the limit is kept (same object); one byte more is cut with '...'."""
    exact = "a" * MAX_MESSAGE_BYTES
    assert truncate_message(exact) is exact
    over = "a" * (MAX_MESSAGE_BYTES + 1)
    cut_message = truncate_message(over)
    assert cut_message == "a" * (MAX_MESSAGE_BYTES - 3) + "..."
    assert len(cut_message.encode()) == MAX_MESSAGE_BYTES
    assert truncate_message("abcdef", 6) == "abcdef"
    assert truncate_message("abcdefg", 6) == "abc..."


def test_truncate_message_measures_bytes_not_characters() -> None:
    """Non-ASCII text is measured in UTF-8 bytes and cut on a character boundary."""
    fits = "é" * 5  # ten bytes
    assert truncate_message(fits, 10) is fits
    assert truncate_message("é" * 6, 10) == "é" * 3 + "..."  # 7 bytes: 3 whole characters
    assert truncate_message("日" * 4, 10) == "日" * 2 + "..."  # 12 bytes -> 6 + "..." = 9


def test_cut_at_the_exact_limit() -> None:
    """cut keeps text of exactly limit bytes (same object), else cuts on a character."""
    text = "abcd"
    assert cut(text, 4) is text
    assert cut("abcde", 4) == "abcd"
    assert cut("ab", 8) == "ab"
    short = "é"  # quick path: len <= limit // 4
    assert cut(short, 4) is short
    assert cut("éé", 4) == "éé"
    assert cut("ééé", 4) == "éé"
    assert cut("éé", 3) == "é"
    assert cut("😀😀", 7) == "😀"
    assert cut("abcdefgh", 8) == "abcdefgh"
    assert cut("abcdefghi", 8) == "abcdefgh"
    assert cut("日日日", 8) == "日日"  # len 3 > 8 // 4: measured, 9 bytes


def test_safe_text_replaces_only_lone_surrogates() -> None:
    """Valid text (ASCII or not) is the same object; a lone surrogate becomes '?'."""
    ascii_text, other = "abc", "é日"
    assert safe_text(ascii_text) is ascii_text
    assert safe_text(other) is other
    assert safe_text("a\ud800b") == "a?b"


def test_identifier_is_cut_to_the_identifier_limit() -> None:
    """Identifiers are valid UTF-8 and at most MAX_IDENTIFIER_BYTES bytes."""
    assert identifier("x" * (MAX_IDENTIFIER_BYTES + 10)) == "x" * MAX_IDENTIFIER_BYTES
    assert identifier("é" * MAX_IDENTIFIER_BYTES) == "é" * (MAX_IDENTIFIER_BYTES // 2)
    assert identifier("a\udfffb") == "a?b"


def test_rich_status_proto_without_details_is_built_from_code_and_message() -> None:
    """No details trailer: the proto is the code's number and the message; else the trailer's."""
    bare = RichStatus(grpc.StatusCode.NOT_FOUND, "gone", (("other", b"x"), (DETAILS_KEY, "str")))
    proto = bare.proto
    assert (proto.code, proto.message, len(proto.details)) == (5, "gone", 0)
    sent = RichStatus(grpc.StatusCode.NOT_FOUND, "gone",
                      ((DETAILS_KEY, proto.SerializeToString()),))
    assert sent.proto == proto
    assert isinstance(sent, grpc.Status)


def test_builtin_timeout_error_gets_the_timeout_message_over_http() -> None:
    """Python's TimeoutError: 504 TIMEOUT_ERROR with the fixed timeout message, not its text."""
    http = to_http(builtins.TimeoutError("db at 10.0.0.7 took too long"))
    assert http.status == 504
    assert http.body == {"error": "TIMEOUT_ERROR", "message": TIMEOUT_MESSAGE, "details": {}}
    assert TIMEOUT_MESSAGE == "The operation timed out"
    assert http.headers == {}
    bug = to_http(RuntimeError("secret"))
    assert bug.body == {"error": "INTERNAL_ERROR", "message": "An internal error occurred",
                        "details": {}}
    assert bug.status == 500
