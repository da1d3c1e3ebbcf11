"""The error catalog: every registered class with its code, gRPC status, HTTP status, retry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from octollm_grpc import codes

__all__ = ["catalog_rows", "markdown_table", "render_markdown"]

_HEADER = ("class", "error_code", "gRPC code", "HTTP", "retryable")


def catalog_rows() -> list[tuple[str, str, str, str, str]]:
    """One row per registered class, plus the two rows for exceptions outside the hierarchy."""
    rows = [
        (cls.__name__, m.error_code, m.grpc_code.name, str(m.http_status),
         "yes" if m.retryable else "no")
        for cls, m in codes.registered()
    ]
    for name, m in (("builtin TimeoutError (and asyncio.TimeoutError)", codes.BUILTIN_TIMEOUT),
                    ("any other exception", codes.UNEXPECTED)):
        rows.append((name, m.error_code, m.grpc_code.name, str(m.http_status),
                     "yes" if m.retryable else "no"))
    return rows


def render_markdown() -> str:
    """The catalog as a Markdown table (docs/errors.md's error catalog is exactly this)."""
    return markdown_table(_HEADER, catalog_rows())


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table of these columns and rows, as the catalogs print it.

    Cells are written as given: the caller escapes ``|`` and line breaks in free text.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
