"""The error catalog: every registered class with its code, gRPC status, HTTP status, retry."""

from __future__ import annotations

from octollm_grpc import codes

__all__ = ["catalog_rows", "render_markdown"]

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
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in catalog_rows()]
    return "\n".join(lines) + "\n"
