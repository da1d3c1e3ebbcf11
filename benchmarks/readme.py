"""The README's benchmark section, rebuilt from ``latest.md`` between its markers."""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"

INTRO = """## Performance

What the framework costs, measured against bare grpcio and the peers in the same run
(`benchmarks/`, figures in `benchmarks/results/latest.json`):

- **Overhead**: unary calls with a ~1.1 KiB message, client and server in separate processes
  on 127.0.0.1, at 1 and 32 calls in flight, sync and aio. Bare grpcio, our server stack
  (`server_interceptors()`: error mapping, request ids, logging, metrics; and with rate limit
  and auth added), grpc-interceptor's `ExceptionToStatusInterceptor`, and our client stack
  (`resilient_channel`: retry, budget, breaker) are run interleaved (each repetition runs every
  variant back to back, in a rotating order), and each ratio is taken against the bare run of
  the same repetition: median and [min-max] of the repetitions. The error path compares a
  handler raising `TaskNotFoundError` through our stack (rich details, a log line, metrics)
  with a bare handler calling `context.abort(NOT_FOUND, ...)` and with grpc-interceptor's
  `NotFound` (plain string details).
- **Codec**: `to_status` and `from_rpc_error` per error, in microseconds.
- **Retry storm**: an asyncio fleet at a fixed total rate against a capacity-limited server,
  a trigger window (a 30 s incident scaled down) that fails everything (`outage`) or halves the
  capacity (`brownout`); amplification (attempts the server received / calls made), goodput and
  recovery time for no retries, the seed's naive `retry_with_backoff`, and our stack.

Run it with `make bench` (a few minutes on 2 cores; writes `benchmarks/results/latest.json` and
`latest.md`), or `python -m benchmarks --smoke` for a seconds-long check that every part works
(part of `make test`). `python -m benchmarks --update-readme` copies `latest.md` here.
Ratios above 1 within the spread mean "no measurable cost"; on a loaded machine the spread
grows, so read the [min-max] range, not only the median.

"""


def section(table: str) -> str:
    """The full text between the markers for ``table`` (the contents of ``latest.md``)."""
    return f"{BEGIN}\n{INTRO}{table.rstrip()}\n{END}"


def update(latest_md: Path, readme: Path = README) -> None:
    """Replace the README's benchmark section with the intro and ``latest_md``."""
    text = readme.read_text()
    head, sep, rest = text.partition(BEGIN)
    _, sep_end, tail = rest.partition(END)
    if not sep or not sep_end:
        raise SystemExit(f"{readme}: markers {BEGIN} / {END} not found")
    readme.write_text(head + section(latest_md.read_text()) + tail)
