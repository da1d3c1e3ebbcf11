"""The performance page (docs/performance.md), rebuilt from ``latest.md`` between its markers."""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
# The page the README's performance section moved to (the name README is kept for callers).
README = Path(__file__).resolve().parent.parent / "docs" / "performance.md"

INTRO = """# Performance

What the framework costs, measured against bare grpcio and its peers in the same run, and what
it does in a retry storm (`benchmarks/`; every figure in `benchmarks/results/latest.json`).

```sh
make bench                            # full run, ~15 minutes on 2 cores (installs valgrind)
python -m benchmarks --smoke          # seconds; part of make test; no targets asserted
python -m benchmarks --update-readme  # copy results/latest.md into this page
python -m benchmarks.instructions     # the instruction counts alone (~4 minutes)
python -m benchmarks.pathcost --profile  # where each path's instructions go (~8 minutes)
```

The full run writes `benchmarks/results/latest.json` and `latest.md`. What is measured:

- **Instructions per call (the headline).** CPU time on a shared 2-core machine moves by up to
  10 % from run to run; the number of instructions a process executes for a call does not. The
  server process runs under `valgrind --tool=callgrind --instr-atstart=no`
  (`benchmarks/ir_server.py`), one call in flight from a client outside valgrind: per path, 100
  warm-up calls uncounted, `callgrind_control -i on`, 200 calls, `callgrind_control -d` (the
  dump's `totals:` over 200 is the count: every thread of the process, grpc's core, the
  interpreter and the stack). For the client side the client runs under callgrind against a
  bare server (`benchmarks/ir_client.py`). One part is kept out of every count: absl::Mutex's
  spin-wait in grpc's core (the loop that polls a held lock up to 1500 times before it sleeps,
  found by its machine code in the installed `cygrpc`). Under valgrind threads run one at a
  time, so how long a waiter spins depends on when valgrind switches threads, not on the work:
  between two runs it alone moved from 2k to 20k instructions per call while every other
  function stayed within 0.5 %; it is kept apart in the dumps. `make bench` counts everything
  twice, back to back, and writes both runs and their largest difference. Headline keys per
  stack: `server_success_ir_ratio`, `server_error_ir_ratio`, `server_rejection_ir_ratio`,
  `client_success_ir_ratio` (bare / ours) and `server_error_vs_peer_ir_ratio` (peer / ours);
  above 1, ours is cheaper. The raw counts are under `ir`.
- **Server and client overhead under load (the second view).** Unary calls carrying a ~1.1 KiB
  task record (`google.protobuf.Value`), client and server in separate processes on 127.0.0.1,
  at 1 and 32 calls in flight, for `grpc` and `grpc.aio`. Variants: bare grpcio; our server
  stack (`server_interceptors()`: error mapping, request ids, logging as JSON lines, metrics),
  alone and with rate limiting and auth added; grpc-interceptor's
  `ExceptionToStatusInterceptor`; our client stack (`resilient_channel`: retry, budget,
  breaker); a do-nothing client interceptor (the floor any Python client interceptor pays). Each
  repetition runs every variant back to back in a rotating order (A B C, B C A, ...) and each
  ratio is taken against the bare run of the same repetition; tables give the median and
  [min-max] over repetitions. The CPU ratios per stack at 32 calls in flight (server or client
  CPU per call): `server_error_cpu_ratio`, `server_error_vs_peer_cpu_ratio`,
  `server_rejection_cpu_ratio`, `server_success_cpu_ratio`, `client_success_cpu_ratio`; the
  throughput ratios (`server_success_ratio`, ...), the 1-in-flight twins and p50/p99 latencies
  stay in the JSON and the tables.
- **Error path.** A handler raising `TaskNotFoundError` through our stack (rich details, one log
  line, metrics) against a bare handler calling `context.abort(NOT_FOUND, ...)`; against
  grpc-interceptor raising its `NotFound` (plain string details, no log, no metrics); and
  against **the same work assembled from peers** (`benchmarks/peer_stack.py`), which is what a
  team would write by hand instead of using this framework: grpc-interceptor; on every call a
  request id (the caller's or a new one, bound for the handler's logs and sent back as a
  trailer), `grpc_server_started_total`, and per finished call `grpc_server_handled_total` and
  the `grpc_server_handling_seconds` histogram; on a failure also `octollm_errors_total` and
  `octollm_error_duration_seconds`, a grpcio-status rich status with `ErrorInfo`,
  `ResourceInfo` and `RequestInfo`, and one structlog JSON line. The metric names and labels
  are ours (on its own registry); `tests/bench/test_variants.py` checks, on real servers, that
  a successful and a failed call move the same samples on both and send the same details and
  request ids.
- **Load shedding.** A call our rate limiter refuses (`RESOURCE_EXHAUSTED` with `RetryInfo`,
  `QuotaFailure` and the pushback trailer, before any handler runs; counted, not timed, and
  without `RequestInfo`) against a bare handler calling `context.abort(RESOURCE_EXHAUSTED, ...)`.
- **Codec and stack cost.** `to_status` and `from_rpc_error` per error, and the Python time our
  sync server stack adds per call with no gRPC around it (`python -m benchmarks.pathcost`;
  `--profile error` shows where it goes), in CPU microseconds.
- **Retry storm.** A fleet of asyncio callers (one channel each) at a fixed total rate, open
  loop (new calls keep coming whatever happened to earlier ones), every attempt with a 0.5 s
  deadline, against a server with a fixed capacity: it serves a few calls at a time, queues a
  bounded number and sheds the rest with `UNAVAILABLE`, and, like a thread-pool server, keeps
  working on attempts whose caller has already given up. A trigger window (a 30 s incident
  scaled down to 4 s) fails every call (`outage`) or halves the capacity (`brownout`). Clients:
  no retries; the standard's naive `retry_with_backoff` (rewritten in `benchmarks/naive_retry.py`,
  delays scaled like the incident, retrying every failure); our stack with the same attempts,
  backoff and retried codes plus the retry budget and a breaker with a 1 s reset. Figures:
  amplification (attempts the server received for the calls started in the trigger / those
  calls; below 1 when the breaker kept calls off the network), goodput, and recovery time (from
  the end of the trigger until every later quarter second has at least 90 % of its calls
  succeeding; the whole after-phase when that never happens). In the brownout, retries that
  time out in the queue feed the queue: naive retries can keep the server saturated with
  abandoned work long after its capacity is back (a metastable failure).
- **Brownout with the adaptive concurrency limit** (`benchmarks/brownout.py`; alone:
  `python -m benchmarks.brownout --merge`). The same brownout (capacity 200 calls/s halved
  for 4 s, 120 calls/s offered, one attempt per call with a 0.5 s deadline) against our own
  server stack, sync and aio, with `concurrency=ConcurrencyLimit(min_limit=1, max_limit=64,
  initial_limit=8)` (limited) and without (unlimited). The server queues without bound and
  finishes abandoned work, as thread pools and event loops do. Figures per stack:
  `brownout_goodput_ratio_*` (calls succeeding in the window per second / the reduced
  capacity, 100/s), `brownout_p99_ratio_*` (p99 latency of the calls started in the window
  that the server admitted, timeouts at their deadline / the p99 at half capacity),
  `brownout_recovery_s_*` (as in the storm) and `half_capacity_refusals_*` (calls refused at
  100 calls/s with no trigger). Targets for the limited server: goodput >= 0.9, p99 <= 3x,
  recovery <= 1 s, no refusal at half capacity. Without the limit the queue grows 20 calls a
  second and admitted calls wait up to the deadline; with it, about a fifth of the calls in
  the window are refused at once with pushback and the admitted ones keep their latency.
  Capacities are nominal (`slots / service_s`): on a busy machine each call takes longer than
  `service_s` (scheduling delays), the real capacity is lower, "half capacity" is not half,
  and a latency-based limiter rightly sheds more; read the load average given with the
  brownout table. `python -m benchmarks.brownout_model` compares limiter designs on a model
  of the same brownout, free of that noise.
- **Hedging** (`benchmarks/hedging.py`; alone: `python -m benchmarks.hedging`, `--merge` puts
  its figures into `latest.json` beside the last full run's). An asyncio server answers each
  attempt in ~1 ms, but 5 % of attempts, drawn independently, first stall 100 ms (a slow
  replica, a GC pause). Four closed-loop callers, 4,000 calls per phase, each phase in a fresh
  client process, sync and aio clients: the p95 of the same server without stalls (the
  *unloaded p95*), then p99 without hedging and with `hedgingPolicy` (`maxAttempts` 2,
  `hedgingDelay` at that p95, the default budget and breaker), and the extra attempts the
  server received (cancelled losers included). Then a total outage (every attempt
  `UNAVAILABLE` at once, 1,000 calls, no breaker so that the budget alone caps them): attempts
  per call with hedging (`maxAttempts` 3, `UNAVAILABLE` non-fatal) against retries
  (`maxAttempts` 3), and hedging without a budget for scale. Keys:
  `hedging_p99_reduction_{sync,aio}` (p99 without / with hedging; target >= 3),
  `hedging_extra_attempts_{sync,aio}` (target <= 0.10),
  `hedging_outage_amplification_{sync,aio}` and `retry_outage_amplification_{sync,aio}`
  (target: hedging <= retries). The unloaded p95 sets the delay, so a busy machine (a p95 of
  ~13-20 ms instead of ~4 ms) makes the hedged p99 about delay + one fast call, and the
  machine's own p99 without any stall (the calibration row) is a floor no hedging gets under:
  read the figures with the run's load average. Each hedge spends a budget token, and the
  default bucket (10 tokens, half of them usable at once) throttles bursts of slow calls (the
  "hedges sent / throttled" column); `hedged_burst_budget` repeats the phase with a bucket of
  100 tokens at the same `tokenRatio` 0.1 (the same long-run cap of 10 % extra attempts).

Reading the figures: a ratio of 1 means "costs nothing measurable"; ratios above 1 are noise.
On a shared machine the spread grows, so read the [min-max] range and the load average printed
with the run, not only the median. One pitfall found on the way: grpc-interceptor treats any
iterable response as a response stream, so a unary method returning a `google.protobuf.Struct`
(which iterates its keys) fails with "Failed to serialize response!" under it; the benchmark
message is a `Value` for that reason.

**Where the instructions go (`python -m benchmarks.pathcost --profile`).** Every figure is
server instructions per call (thousands), callgrind on real servers as above, 100 calls after
100 warm-ups. Per part: `ours` with one part switched off (`benchmarks/variants.py`,
`ABLATIONS`), so a part's figure is what switching it off saves; "our core" (error mapping, the
rich status, deadline propagation, the OpenTelemetry check, the rate limiter) is `ours` with
request ids, logging and metrics all off against the do-nothing interceptor (the floor); the
floor against bare grpcio is grpc's own interception machinery. The parts do not add up exactly
(a part switched off also skips work the others share): the rest is the "interplay" row. Each
cell is the start of this round's cost work → after it (commit `66402ed`):

| sync, thousands | success | error (`NOT_FOUND`) | refusal |
|---|---|---|---|
| bare grpcio | 397.1 → 399.7 | 391.5 → 391.8 | 385.3 → 387.1 |
| interception machinery (floor - bare) | 5.3 → 3.7 | 4.6 → 5.0 | 4.7 → 5.8 |
| our core (ours_core - floor) | 31.7 → 24.2 | 179.3 → 190.1 | 112.2 → 96.8 |
| request ids (ours - ours_no_ids) | 28.1 → 18.9 | 31.9 → 25.8 | 17.9 → 13.0 |
| metrics (ours - ours_no_metrics) | 17.0 → 8.3 | 37.5 → -0.4 | 17.9 → 12.6 |
| logging (ours - ours_no_logs) | 0.8 → -1.0 | 82.3 → 53.0 | 13.4 → 12.8 |
| interplay (ours - the sum above) | -0.1 → 1.8 | 10.6 → 18.4 | -2.5 → -3.6 |
| ours | 479.8 → 455.7 | 737.7 → 683.8 | 548.9 → 524.6 |

| aio, thousands | success | error (`NOT_FOUND`) | refusal |
|---|---|---|---|
| bare grpcio | 513.5 → 511.2 | 521.7 → 525.0 | 514.9 → 516.3 |
| interception machinery (floor - bare) | 9.2 → 8.3 | 8.6 → 7.6 | 2.3 → 2.4 |
| our core (ours_core - floor) | 30.3 → 28.6 | 196.2 → 182.0 | 296.4 → 112.1 |
| request ids (ours - ours_no_ids) | 48.8 → 43.1 | 52.4 → 30.2 | 27.5 → 166.0 |
| metrics (ours - ours_no_metrics) | 35.0 → 6.2 | 38.9 → 4.4 | 20.5 → 6.0 |
| logging (ours - ours_no_logs) | -0.2 → -0.3 | 89.8 → 64.4 | 12.7 → 6.1 |
| interplay (ours - the sum above) | -16.5 → -4.8 | -24.5 → 19.2 | -14.6 → 13.1 |
| ours | 620.1 → 592.3 | 883.0 → 832.8 | 859.6 → 822.0 |

What changed, per function (each commit message has its own counts): the server's per-method
metrics are plain counts under one lock, read at scrape time by a prometheus-client custom
collector into the same families, labels and samples (`observability/_method_counts.py`; a
test compares the exposition with prometheus-client's own `Counter` and `Histogram`), on the
server and, since, the client (metrics: 17k → 8k sync success, 35k → 6k aio success, and
nearly nothing left on the error path); the request id lives in the call's one context
variable and structlog's `request_id` variable is set directly once `bind_contextvars` has
shown it holds the bare value; unary handlers run the call's start and end without the
`with` frames; while no OpenTelemetry provider is set, the per-call check asks a
`ProxyTracerProvider` instead of `get_tracer_provider()` (which reads `os.environ` through a
caught `KeyError` every call); a rate-limit refusal is sent straight from admission; the
production log chain (`configure_logging(json=True)`) runs five processors as one (the same
JSON line, key for key; logging on the error path 82k → 53k sync); the resilient channel is one
interceptor instead of two with a straight path for unary calls of methods neither hedged nor
capped (client 406k → 358k sync, 513k → 438k aio). The aio refusal and error columns move by
tens of thousands between runs and between ablations (the aio "request ids" refusal cell above
is one): every `await context.abort()` leaves a reference cycle (grpc's `AbortError`, its
traceback and frames), so how often the cyclic collector runs inside the counted window, and
how large the heap it walks is, decides much of those paths' count.

**The targets: what is grpc's own and what is ours.** The targets are on the instruction
ratios, both stacks: success >= 0.93 of bare grpcio, the error path >= 1.25x cheaper than the
equal-work peer, a refusal >= 0.85 of a bare `abort(RESOURCE_EXHAUSTED)`, client success
through `resilient_channel` >= 0.93 of a bare channel. The latest run (below) gives, sync /
aio: success 0.876 / 0.882 (the last round's run: 0.82 / 0.85), error 1.12x / 1.10x cheaper
than the peer (1.05x / 1.04x), refusal 0.74 / 0.78 (0.70 / 0.74), client 0.77 / 0.73 (0.70 /
0.69). None is met. Two back-to-back counts differ by at most 3.2 %: the sync counts by under
2 %, the aio ones by up to 3.2 %, bare grpcio's own included (526.8k and 514.3k per successful
call), because the number of event-loop iterations per call, and so the instructions, depends
on timing (the first pass ran while another callgrind job used the second core). What is left,
against the measured floors:

- **The floor.** A do-nothing server interceptor costs 4-9k per call (0.98-0.99 of bare): every
  server target is above it. A do-nothing client interceptor costs 58k (sync) and 79k (aio) on
  top of a bare channel's 274k / 319k: the client floor is 0.83 / 0.80, below 0.93. No client
  stack built on grpc's interceptors can meet it; `resilient_channel` adds 26k (sync) and 39k
  (aio) above that floor (metrics ~13k after the custom collector, request id ~5k, the trace
  check, the plan lookup and call details), and would have to bypass grpc's interception (wrap
  the channel's multicallables itself) to approach 0.93.
- **Success (0.876 / 0.882).** Ours adds 56k (sync) / 70k (aio) per call over bare: 0.93 allows
  about 30k / 40k. Left: our core ~24k (the call's context variable and deadline, the
  OpenTelemetry check, the handler wrapper), request ids ~19k (the id, structlog's variable,
  and grpc core sending the `x-request-id` trailer), metrics ~8k.
- **Error path (1.12x / 1.10x).** 1.25x needs ours at 609k (sync, now 680k) and 741k (aio, now
  845k). The rich status is about 100k of the 190k "core" (the message and detail checks,
  `ErrorInfo`, the class's details, the `Struct` envelope, `RequestInfo`); logging 53k, most of
  it structlog's own dispatch (the filtering logger's method, `_proxy_to_logger` and
  `_process_event` copy the fields three times; only structlog's private methods get around
  it), then `get_current_span` for the trace ids and `merge_contextvars`; request ids 26k.
- **Refusal (0.74 / 0.78).** 0.85 needs ours at 453k (sync, now 520k): our core 97k (the
  limiter's key from the peer address, its bucket, the wait rounding, the cached status, the
  aggregated log event, the OpenTelemetry check, the call's start), request ids 13k, metrics
  13k, logging 13k.
- **Compiling the hot path.** An experiment compiled eight of the modules above with mypyc
  (not merged): the error path fell by 21k (sync) and 26k (aio), success and refusal moved
  within the noise (compiled code calling back into Python, grpc, structlog and
  prometheus-client pays the interpreter's call setup that Python-to-Python calls avoid). It
  also needed source changes (`object.__new__` on compiled classes, slots of interpreted
  subclasses), could not compile `errors/_base.py` or async generators, and a compiled
  generator dropped without `close()` never ran its `finally`: a cancelled sync server stream
  was never ended. Platform wheels and a 1.7 MB extension for a few per cent: not taken.

The previous rounds' CPU-ratio tables (the redesign of the status encoder, the CPU targets)
are in the git history of this page; the CPU ratios at 32 in flight stay in the tables below.

"""


def section(table: str) -> str:
    """The full text between the markers for ``table`` (the contents of ``latest.md``)."""
    return f"{BEGIN}\n{INTRO}## Latest results\n\n{table.rstrip()}\n{END}"


def update(latest_md: Path, readme: Path = README) -> None:
    """Replace the performance page's generated section with the intro and ``latest_md``."""
    text = readme.read_text()
    head, sep, rest = text.partition(BEGIN)
    _, sep_end, tail = rest.partition(END)
    if not sep or not sep_end:
        raise SystemExit(f"{readme}: markers {BEGIN} / {END} not found")
    readme.write_text(head + section(latest_md.read_text()) + tail)
