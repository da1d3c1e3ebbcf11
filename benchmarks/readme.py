"""The README's benchmark section, rebuilt from ``latest.md`` between its markers."""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"

INTRO = """## Performance

What the framework costs, measured against bare grpcio and its peers in the same run, and what
it does in a retry storm (`benchmarks/`; every figure in `benchmarks/results/latest.json`).

```sh
make bench                            # full run, a few minutes on 2 cores
python -m benchmarks --smoke          # seconds; part of make test; no targets asserted
python -m benchmarks --update-readme  # copy results/latest.md into this section
```

The full run writes `benchmarks/results/latest.json` and `latest.md`. What is measured:

- **Server and client overhead.** Unary calls carrying a ~1.1 KiB task record
  (`google.protobuf.Value`), client and server in separate processes on 127.0.0.1, at 1 and 32
  calls in flight, for `grpc` and `grpc.aio`. Variants: bare grpcio; our server stack
  (`server_interceptors()`: error mapping, request ids, logging as JSON lines, metrics), alone
  and with rate limiting and auth added; grpc-interceptor's `ExceptionToStatusInterceptor`; our
  client stack (`resilient_channel`: retry, budget, breaker); a do-nothing client interceptor
  (the floor any Python client interceptor pays). Each repetition runs every variant back to
  back in a rotating order (A B C, B C A, ...) and each ratio is taken against the bare run of
  the same repetition; tables give the median and [min-max] over repetitions. The headline
  keys (`server_success_ratio`, `server_error_ratio`, `peer_error_ratio`,
  `client_success_ratio`, per stack) are throughput ratios at 32 calls in flight; the JSON also
  has the 1-in-flight ratios, p50/p99 latencies and the CPU time per call of the side whose
  stack differs (a steadier measure on a busy machine).
- **Error path.** A handler raising `TaskNotFoundError` through our stack (rich details, one log
  line, metrics) against a bare handler calling `context.abort(NOT_FOUND, ...)`, and against
  grpc-interceptor raising its `NotFound` (plain string details, no log, no metrics).
- **Codec and stack cost.** `to_status` and `from_rpc_error` per error, and the Python time our
  sync server stack adds per call with no gRPC around it (`python -m benchmarks.pathcost`;
  `--profile error` shows where it goes), in CPU microseconds.
- **Retry storm.** A fleet of asyncio callers (one channel each) at a fixed total rate, open
  loop (new calls keep coming whatever happened to earlier ones), every attempt with a 0.5 s
  deadline, against a server with a fixed capacity: it serves a few calls at a time, queues a
  bounded number and sheds the rest with `UNAVAILABLE`, and, like a thread-pool server, keeps
  working on attempts whose caller has already given up. A trigger window (a 30 s incident
  scaled down to 4 s) fails every call (`outage`) or halves the capacity (`brownout`). Clients:
  no retries; the seed's naive `retry_with_backoff` (rewritten in `benchmarks/naive_retry.py`,
  delays scaled like the incident, retrying every failure); our stack with the same attempts,
  backoff and retried codes plus the retry budget and a breaker with a 1 s reset. Figures:
  amplification (attempts the server received for the calls started in the trigger / those
  calls; below 1 when the breaker kept calls off the network), goodput, and recovery time (from
  the end of the trigger until every later quarter second has at least 90 % of its calls
  succeeding; the whole after-phase when that never happens). In the brownout, retries that
  time out in the queue feed the queue: naive retries can keep the server saturated with
  abandoned work long after its capacity is back (a metastable failure).

Reading the figures: a ratio of 1 means "costs nothing measurable"; ratios above 1 are noise.
On a shared machine the spread grows, so read the [min-max] range and the load average printed
with the run, not only the median. One pitfall found on the way: grpc-interceptor treats any
iterable response as a response stream, so a unary method returning a `google.protobuf.Struct`
(which iterates its keys) fails with "Failed to serialize response!" under it; the benchmark
message is a `Value` for that reason.

"""


def section(table: str) -> str:
    """The full text between the markers for ``table`` (the contents of ``latest.md``)."""
    return f"{BEGIN}\n{INTRO}### Latest results\n\n{table.rstrip()}\n{END}"


def update(latest_md: Path, readme: Path = README) -> None:
    """Replace the README's benchmark section with the intro and ``latest_md``."""
    text = readme.read_text()
    head, sep, rest = text.partition(BEGIN)
    _, sep_end, tail = rest.partition(END)
    if not sep or not sep_end:
        raise SystemExit(f"{readme}: markers {BEGIN} / {END} not found")
    readme.write_text(head + section(latest_md.read_text()) + tail)
