"""The error catalog: every registered class with its codes and what each consumer does with
it, then the one table of code behaviour (``octollm_grpc.codes.CODE_BEHAVIOUR``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from octollm_grpc import codes

__all__ = ["behaviour_rows", "catalog_rows", "markdown_table", "render_markdown"]

_HEADER = ("class", "error_code", "gRPC code", "HTTP", "log level", "gRPC client retries",
           "resilience.retry", "breaker failure")
_BEHAVIOUR_HEADER = ("gRPC code", "fault (log level)", "gRPC client retries",
                     "pushback honoured", "resilience.retry", "breaker failure",
                     "why they differ")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _client_retry(row: codes.CodeBehaviour) -> str:
    if row.client_retry:
        return "yes"
    return "on pushback" if row.pushback_retry else "no"


def _row(name: str, m: codes.ErrorMapping, level: str) -> tuple[str, ...]:
    code = codes.behaviour(m.grpc_code)
    return (name, m.error_code, m.grpc_code.name, str(m.http_status), level,
            _client_retry(code), _yes(m.retryable), _yes(code.breaker_failure))


def catalog_rows() -> list[tuple[str, ...]]:
    """One row per registered class, plus the two rows for exceptions outside the hierarchy."""
    rows = [_row(cls.__name__, m, "warning" if m.client_error else "error")
            for cls, m in codes.registered()]
    rows.append(_row("builtin TimeoutError (and asyncio.TimeoutError)", codes.BUILTIN_TIMEOUT,
                     "error"))
    rows.append(_row("any other exception", codes.UNEXPECTED, "critical"))
    return rows


def behaviour_rows() -> list[tuple[str, ...]]:
    """One row per status code: ``octollm_grpc.codes.CODE_BEHAVIOUR`` as printed."""
    return [
        (row.code.name, "none" if row.fault == "none" else f"{row.fault} ({row.level})",
         _client_retry(row), _yes(row.pushback_honoured), _yes(row.helper_retry),
         _yes(row.breaker_failure), row.why)
        for row in codes.CODE_BEHAVIOUR
    ]


def render_markdown() -> str:
    """The catalog, then the code table, as Markdown (docs/errors.md shows exactly this)."""
    return (markdown_table(_HEADER, catalog_rows())
            + "\nWhat each status code means to each consumer (one table, "
            "`octollm_grpc.codes.CODE_BEHAVIOUR`; every default is computed from it):\n\n"
            + markdown_table(_BEHAVIOUR_HEADER, behaviour_rows()))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table of these columns and rows, as the catalogs print it.

    Cells are written as given: the caller escapes ``|`` and line breaks in free text.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
