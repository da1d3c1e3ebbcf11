"""The Python time our sync server stack adds per call, measured without gRPC around it.

A unary handler is wrapped exactly as a server would wrap it (``intercept_service``) and called
with a minimal stand-in for the servicer context, so the figure is the stack's own work per call
(request id, metrics, and on the error path the rich status, the log line and the trailers),
free of network and scheduling noise. ``python -m benchmarks.pathcost --profile`` prints where
that time goes (cProfile, sorted by own time).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import pstats
import statistics
import time
import timeit
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from benchmarks import payload, variants

_Details = collections.namedtuple("_Details", "method invocation_metadata")


class FakeContext:
    """The part of ``grpc.ServicerContext`` a unary handler and our stack use."""

    def __init__(self) -> None:
        self._trailers: Any = None
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        # What the overhead benchmark's clients send: a user agent and the bearer token.
        return (("user-agent", "grpc-python/bench"), *variants.AUTH_METADATA)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._trailers = metadata

    def trailing_metadata(self) -> Any:
        return self._trailers

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def details(self) -> str | None:
        return self._details

    def set_details(self, details: str) -> None:
        self._details = details

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        # As grpcio's sync context does: record the status, raise a bare Exception.
        self._code, self._details = code, details
        raise Exception()

    def abort_with_status(self, status: Any) -> None:
        self._trailers = status.trailing_metadata
        self.abort(status.code, status.details)

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> float | None:
        return None


def wrapped_call(variant: str, path: str) -> Callable[[], None]:
    """One call of ``path`` through ``variant``'s sync stack, as a no-argument function."""
    details: Any = _Details(path, ())
    handler: Any = variants.handlers(variant, "sync").service(details)
    for interceptor in reversed(list(variants.interceptors(variant, "sync"))):
        inner = handler
        handler = interceptor.intercept_service(lambda _, h=inner: h, details)
    behavior = handler.unary_unary
    request = payload.task_message()

    def call() -> None:
        # The error path ends in abort's exception, as it does under grpcio.
        with contextlib.suppress(Exception):
            behavior(request, FakeContext())

    return call


def _per_call_us(call: Callable[[], None], repeat: int, number: int) -> float:
    call()
    # CPU time of this thread, not wall time: other processes on the machine do not count.
    timer = timeit.Timer(call, timer=time.thread_time)
    runs = [min(timer.repeat(number=number, repeat=3)) / number * 1e6 for _ in range(repeat)]
    return statistics.median(runs)


def run(repeat: int = 5, number: int = 2000) -> dict[str, float]:
    """CPU µs per call for bare, our stack and our stack with rate limit and auth (``ours_all``),
    success and error (median of repeats)."""
    out: dict[str, float] = {}
    for kind, path in (("success", payload.GET_TASK_PATH),
                       ("error", payload.GET_MISSING_TASK_PATH)):
        for variant in ("bare", "ours", "ours_all"):
            out[f"{variant}_{kind}_us"] = _per_call_us(
                wrapped_call(variant, path), repeat, number)
    # A call the rate limiter refuses (ours) vs a bare abort with RESOURCE_EXHAUSTED.
    for variant in ("bare", "ours"):
        out[f"{variant}_reject_us"] = _per_call_us(
            wrapped_call(variant, payload.GET_THROTTLED_TASK_PATH), repeat, number)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Print the per-call figures; with ``--profile``, where the error path's time goes."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pathcost", description=__doc__)
    parser.add_argument("--profile", choices=("success", "error", "reject"), default=None)
    args = parser.parse_args(argv)
    for key, value in run().items():
        print(f"{key}: {value:.1f}")
    if args.profile:
        path = {"success": payload.GET_TASK_PATH, "error": payload.GET_MISSING_TASK_PATH,
                "reject": payload.GET_THROTTLED_TASK_PATH}[args.profile]
        call = wrapped_call("ours", path)
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        for _ in range(5000):
            call()
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
