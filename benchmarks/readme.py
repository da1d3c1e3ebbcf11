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
server instructions per call (thousands), callgrind on real servers as above. Per part: `ours`
with one part switched off (`benchmarks/variants.py`, `ABLATIONS`), so a part's figure is what
switching it off saves; "our core" (error mapping, deadline propagation, the OpenTelemetry
check) is `ours` with request ids, logging and metrics all off against the do-nothing
interceptor (the floor); the floor against bare grpcio is grpc's own
interception machinery. The parts do not add up exactly (a part switched off also skips work
the others share, e.g. the log event's request id): the rest is the last row. Refusal figures
are before → after this round's two refusal changes (the cached status without `RequestInfo`,
no latency observations, no `RateLimitError` built per refusal); success and error were not
changed (their before/after differ by the run-to-run noise only).

| sync | success | error (`NOT_FOUND`) | refusal |
|---|---|---|---|
| bare grpcio | 400.6 | 393.7 | 387.4 → 387.6 |
| interception machinery (floor - bare) | 3.8 | 4.4 | 6.0 → 7.3 |
| our core (ours_core - floor) | 30.9 | 178.7 | 138.1 → 114.8 |
| request ids (ours - ours_no_ids) | 32.4 | 24.7 | 43.9 → 24.1 |
| metrics (ours - ours_no_metrics) | 23.6 | 41.5 | 29.8 → 13.8 |
| logging (ours - ours_no_logs) | 5.3 | 86.8 | 11.9 → 21.6 |
| interplay (ours - the sum above) | -8.9 | 1.6 | 1.1 → -6.5 |
| ours | 487.7 | 731.3 | 618.2 → 562.7 |

| aio | success | error (`NOT_FOUND`) | refusal |
|---|---|---|---|
| bare grpcio | 514.1 | 527.5 | 519.2 → 524.2 |
| interception machinery (floor - bare) | 8.7 | 5.6 | 6.1 → 1.7 |
| our core (ours_core - floor) | 31.8 | 186.3 | 225.0 → 207.7 |
| request ids (ours - ours_no_ids) | 31.0 | 44.2 | 46.2 → 19.6 |
| metrics (ours - ours_no_metrics) | 19.1 | 38.5 | 32.9 → 15.7 |
| logging (ours - ours_no_logs) | -7.9 | 82.4 | 18.5 → 17.3 |
| interplay (ours - the sum above) | 6.8 | -8.6 | -70.9 → -80.8 |
| ours | 603.6 | 875.9 | 777.0 → 705.4 |

Per object file (self instructions, as `callgrind_annotate` lists them; bare grpcio → ours,
this round's code): grpc's core costs the same under our stack as without it; what ours adds is
almost all interpreter, i.e. Python code, plus protobuf for the rich status and libc for the
allocations.

| sync, object | success | error | refusal |
|---|---|---|---|
| interpreter (all Python code) | 240.4 → 318.9 | 249.6 → 539.3 | 247.3 → 404.1 |
| grpc core (C/C++, Cython) | 101.9 → 101.4 | 95.4 → 100.0 | 95.7 → 99.9 |
| protobuf (upb) | 32.1 → 32.1 | 24.2 → 47.3 | 21.9 → 22.2 |
| libc (malloc, memcpy, syscalls) | 27.9 → 30.9 | 25.3 → 40.9 | 25.0 → 32.3 |
| loader (thread-local storage) | 7.2 → 7.3 | 6.6 → 6.6 | 6.6 → 6.6 |
| other | 1.4 → 1.6 | 2.3 → 5.2 | 2.2 → 3.1 |

| aio, object | success | error | refusal |
|---|---|---|---|
| interpreter (all Python code) | 336.9 → 416.6 | 360.6 → 659.8 | 360.0 → 525.8 |
| grpc core (C/C++, Cython) | 116.7 → 125.1 | 123.3 → 131.1 | 124.9 → 138.6 |
| protobuf (upb) | 32.1 → 32.1 | 24.2 → 47.5 | 21.9 → 21.8 |
| libc (malloc, memcpy, syscalls) | 26.9 → 29.8 | 25.4 → 41.3 | 25.4 → 31.3 |
| other | 8.6 → 8.7 | 9.6 → 12.5 | 9.6 → 10.3 |
| loader (thread-local storage) | 7.2 → 7.3 | 6.6 → 6.6 | 6.6 → 6.6 |

Per Python function: callgrind cannot split the interpreter's instructions by Python function
(every one runs inside `_PyEval_EvalFrameDefault`), so this is cProfile on the sync stack run
in-process (`pathcost.wrapped_call`), inclusive, as a share of the whole wrapped call (the
handler included) and before → after for the refusal:

| success: function | share of the call |
|---|---|
| `server/_core.py(begin)` | 56% |
| `server/_core.py(__exit__)` | 38% |
| `server/_core.py(succeed)` | 25% |
| `otel.py(active_tracer)` | 13% |
| `server/_core.py(end)` | 10% |
| `propagation.py(enter)` | 8% |
| `server/logs.py(bind_request_id)` | 6% |
| `server/requestid.py(from_metadata)` | 5% |
| `server/requestid.py(_random_hex)` | 3% |
| `propagation.py(leave)` | 2% |
| `server/requestid.py(bind)` | 2% |
| `server/logs.py(unbind_request_id)` | 2% |

| error: function | share of the call |
|---|---|
| `server/_core.py(__exit__)` | 79% |
| `server/_core.py(fail)` | 72% |
| `server/_core.py(_record)` | 35% |
| `status/encode.py(to_status)` | 27% |
| `status/encode.py(_encode)` | 25% |
| `status/encode.py(_encode_error)` | 22% |
| `server/logs.py(failed)` | 19% |
| `server/_core.py(begin)` | 14% |
| `status/encode.py(_build)` | 7% |
| `status/encode.py(extra)` | 6% |
| `status/encode.py(_class_details)` | 6% |

| refusal: function | share of the call |
|---|---|
| `server/_core.py(__enter__)` | 79% → 73% |
| `server/_core.py(__exit__)` | 59% → 51% |
| `server/_core.py(fail)` | 49% → 39% |
| `server/_core.py(_shed)` | 47% → 37% |
| `server/_core.py(begin)` | 20% → 26% |
| `server/_core.py(admit)` | 19% → 20% |
| `server/_core.py(_rate_limit)` | 19% → 19% |
| `server/ratelimit.py(acquire)` | 7% → 9% |
| `server/ratelimit.py(take)` | 6% → 8% |
| `otel.py(active_tracer)` | 5% → 6% |
| `otel.py(call_failed)` | 4% → 6% |
| `status/encode.py(with_request_id)` | 11% → below the list |
| `status/encode.py(data)` | 6% → below the list |
| `server/shedding.py(error)` | 4% → below the list |
| `errors/catalog.py(__init__)` | 3% → below the list |

**The targets: what is grpc's own and what is ours.** This round's targets are on the
instruction ratios, both stacks: success >= 0.93 of bare grpcio, the error path >= 1.25x cheaper
than the equal-work peer, a refusal >= 0.85 of a bare `abort(RESOURCE_EXHAUSTED)`, client
success through `resilient_channel` >= 0.93 of a bare channel. The latest run's values are in
the targets table below; none is met (success 0.82 / 0.85, error 1.05x / 1.04x, refusal
0.70 / 0.74, client 0.70 / 0.69, sync / aio). Where each stands, from the attribution above:

- **After merging the 1.0 API (not in the latest run below).** A count of bare, ours, the
  peer and the clients on the merged code: the server counts moved by at most 1 %, but
  `resilient_channel` now costs 405k (sync) and 495k (aio) per call against 392-394k and 461k
  before, so the client ratios fell to 0.68 (sync) and 0.65 (aio); the merged client work
  (one request id per call for all attempts, the restructured core) is the place to look.
- **The floor.** A do-nothing server interceptor costs 4-9k instructions per call (grpc's
  interception machinery: 0.98-0.99 of bare), so every server target is above the floor and
  reachable in principle. On the client a do-nothing client interceptor alone costs about 55k
  (sync) and 80k (aio) on top of a bare channel's 275k / 327k: the floor is 0.83 / 0.80, below
  the 0.93 target. No client stack built on `grpc.intercept_channel` / `interceptors=` can
  meet it; `resilient_channel` would have to wrap the channel's multicallables itself.
- **Success (0.82 sync, 0.85 aio).** Ours adds about 87k (sync) / 90k (aio) per call: our core
  ~31k (the call object, the per-call OpenTelemetry provider lookup, 13 % of the stack's Python
  time, because `opentelemetry.trace.get_tracer_provider()` tests `os.environ` on every call;
  deadline propagation), request ids ~31k (the id, two context variables, the trailer),
  metrics ~20-24k (three prometheus-client updates, each under a lock). 0.93 leaves about 30k
  (sync) and 38k (aio): it needs all three parts cut by two thirds (metrics in lock-free
  per-method cells behind a custom collector, one context variable for the id, the provider
  lookup cached), which means moving code between modules that the 1.0 API is renaming now.
- **Error path (1.05x sync, 1.04x aio cheaper than the peer).** Ours 726k (sync) / 877k
  (aio) per failed call against the equal-work peer's 765k / 910k. 1.25x needs ours at 612k /
  728k: the log event (~87k: structlog's
  processor chain and the JSON line), the rich status (`to_status`, a quarter of the stack's
  Python time on this path, plus 23k of protobuf), five metric updates (~40k) and the request
  id (~25-45k). The peer does the same work with less generality (one fixed status, no
  envelope); ours is within a few percent of it.
- **Refusal (0.63 -> 0.70 sync, 0.67 -> 0.74 aio).** The cached status without `RequestInfo`,
  no latency observations and no `RateLimitError` per refusal saved 55k (sync) and 72k (aio)
  per refused call. 0.85 needs ours <= 456k (sync): what is left is the work a call does before
  the limiter decides (request id, context variables, the provider lookup, the started counter)
  and the limiter's key (`context.peer()`). Deciding admission before the call is started (no
  request id for a refused call) restructures `Call.begin`; left for after the 1.0 renames.

**The previous round, on CPU ratios.** Its targets were CPU ratios per call (bare / ours) at 32
in flight; these figures are kept for the record. Two full runs an hour apart on this machine
(an Intel Xeon, where bare grpcio needs about 250 µs of server CPU per call, against about
430 µs on the AMD machine of the previous round, so every µs of Python weighs more) gave,
sync then aio:

| headline | run 1 | run 2 | target |
|---|---|---|---|
| `server_success_cpu_ratio` | 0.76/0.78 | 0.83/0.73 | 0.92/0.95 |
| `client_success_cpu_ratio` | 0.71/0.82 | 0.77/0.76 | 0.92 |
| `server_error_cpu_ratio` | 0.46/0.56 | 0.55/0.58 | 0.75/0.85 |
| `server_error_vs_peer_cpu_ratio` | 1.09/1.03 | 1.09/1.09 | 1.10 |
| `server_rejection_cpu_ratio` | 0.47/0.53 | 0.56/0.63 | 0.90 |
| do-nothing server interceptor (floor) | | 0.93/0.87 | |
| do-nothing client interceptor (floor) | | 0.83/0.83 | |

- **Success paths.** The floor rows are what one interceptor that does nothing keeps in the
  same run: on this machine grpcio's interception machinery alone costs more than the aio
  server target (0.95) and the client target (0.92) allow. No Python interceptor can meet those;
  ours adds 8.5 µs of Python per call on top (request id, metrics, deadline propagation, the
  OpenTelemetry check).
- **Against the same work from peers.** Ours is 9 % cheaper per failed call on both stacks
  (1.09, within the noise of the 1.10 target): the batched log writer is the difference (the
  peer writes and flushes each line, as structlog's own loggers do).
- **Error path.** 55.8 µs of Python per failure (the log event, mapping and rich status, five
  metric updates, request id) against 2 µs for a bare abort; a running server multiplies it by
  two to four (GIL hand-offs between workers, about 40 % of server CPU in the kernel's task
  switching on sync). Meeting 0.75/0.85 needs about 25 µs: sampling or aggregating the
  per-failure log line (`configure_logging(level=logging.ERROR)` already drops client errors
  before they are built), or `CallLogger(peer=False)` on sync (grpcio releases the GIL twice
  for `context.peer()`).
- **Rejection path.** Refusals are now logged in aggregate (one event per caller and second)
  and their status is built once per limit and wait, with the wait rounded up to three
  significant digits so refusals share it (server CPU per refusal, sync / aio at 32 in flight:
  653 / 644 µs before the rounding, 507 / 490 µs after). What remains is about 38 µs of Python
  (pathcost): request id, seven metric updates (started, handled, two histograms), the
  `RequestInfo` added to the shared status, the limiter's key (the peer address: `context.peer()`
  again). 0.90 would need a refusal to cost a few µs: no request id, one counter, a status without
  `RequestInfo`, which drops what an operator reads for a refused call.

**The redesign (one status encoder, one stack per side).** The hand-written protobuf byte writer
that encoded the usual statuses is gone; every status is built with the generated classes
(pieces that are the same per class, code, domain and retry advice are serialised once). Measured
in the same session, two full runs of the code before and three after (sync/aio):

| headline | before 1 | before 2 | after 1 | after 2 | after 3 |
|---|---|---|---|---|---|
| `server_success_cpu_ratio` | 0.71/0.73 | 0.74/0.80 | 0.76/0.82 | 0.82/0.71 | 0.69/0.76 |
| `client_success_cpu_ratio` | 0.74/0.89 | 0.79/0.78 | 0.62/0.90 | 0.77/0.77 | 0.66/0.89 |
| `server_error_cpu_ratio` | 0.54/0.57 | 0.53/0.59 | 0.48/0.53 | 0.52/0.54 | 0.51/0.54 |
| `server_error_vs_peer_cpu_ratio` | 1.10/1.04 | 1.06/1.09 | 0.95/0.90 | 1.03/0.96 | 1.11/1.04 |
| `server_rejection_cpu_ratio` | 0.58/0.58 | 0.58/0.62 | 0.65/0.57 | 0.60/0.56 | 0.56/0.61 |
| `to_status`, `TaskNotFoundError`, µs | 12.3 | 8.0 | 26.5 | 13.5 | 15.3 |
| `to_status`, `RateLimitError`, µs | 18.2 | 12.2 | 34.6 | 17.0 | 19.9 |
| `to_status`, `ValidationErrors(3)`, µs | 81.9 | 48.9 | 83.4 | 38.7 | 44.7 |

The same code moves these ratios by up to 0.1 from one run to the next (the do-nothing floors
move as much), so only the encoder's own cost is clear: about 6 µs more for a status of scalar
details, less for details with lists and maps; on a failed call that costs 500-700 µs of server
CPU here, about 1 % (the bound for keeping a second encoder was 3 %). The error ratios' means
fell by 0.03 (sync) and 0.04 (aio), about the run-to-run spread of the old code (0.09 sync and
0.03 aio over four runs); the first "after" run was slow throughout (bare grpcio's own path cost
1.5 times its usual).

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
