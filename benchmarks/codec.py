"""Encode and decode of a rich status, per error class, in CPU microseconds (in-process).

Encode is ``to_status(exc, request_id=...)`` (what the server interceptor does per failed
call); decode is ``from_rpc_error`` on an ``RpcError`` carrying that status's code, message and
trailers (what the client does per failed call). ``python -m benchmarks.codec`` prints them.
"""

from __future__ import annotations

import functools
import time
import timeit
from collections.abc import Callable
from typing import Any

import grpc

from benchmarks import stats

REQUEST_ID = "3f1c2b9e-6a47-4d1e-9a0b-5c2d7e8f9a10"


class WireError(grpc.RpcError):
    """A failed call as the client sees it: code, message and trailing metadata."""

    def __init__(self, status: Any) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code  # type: ignore[no-any-return]

    def details(self) -> str:
        return self._status.details  # type: ignore[no-any-return]

    def trailing_metadata(self) -> Any:
        return self._status.trailing_metadata

    def initial_metadata(self) -> Any:
        return ()

    def debug_error_string(self) -> str:
        return ""


def sample_errors() -> dict[str, BaseException]:
    """One representative error per kind of detail the encoder writes."""
    from octollm_grpc import errors

    return {
        "TaskNotFoundError": errors.TaskNotFoundError("task-7f3c9a2e-000042"),
        "RateLimitError": errors.RateLimitError(limit=100, window=60, retry_after=30),
        "ValidationErrors(3)": errors.ValidationErrors([
            {"field": "description", "message": "Description is required"},
            {"field": "priority", "message": "Priority must be between 1 and 10"},
            {"field": "timeout", "message": "Timeout must be positive"},
        ]),
        "ArmUnavailableError": errors.ArmUnavailableError(["search", "summarise"]),
        "unexpected RuntimeError": RuntimeError("secret connection string"),
    }


def _per_call_us(fn: Callable[[], Any], repeat: int, number: int) -> dict[str, float]:
    # CPU time of this thread, not wall time: other processes on the machine do not count.
    times = timeit.Timer(fn, timer=time.thread_time).repeat(repeat=repeat, number=number)
    return stats.summary([t / number * 1e6 for t in times])


def run(repeat: int, number: int) -> dict[str, dict[str, Any]]:
    """``{error: {"encode_us": summary, "decode_us": summary, "status_bytes": n}}``."""
    from octollm_grpc.status import from_rpc_error, to_status

    out: dict[str, dict[str, Any]] = {}
    for name, exc in sample_errors().items():
        status = to_status(exc, request_id=REQUEST_ID)
        wire = WireError(status)
        decoded = from_rpc_error(wire)
        if decoded.code() != status.code:
            raise AssertionError(f"{name}: decoded {decoded.code()}, sent {status.code}")
        out[name] = {
            "encode_us": _per_call_us(
                functools.partial(to_status, exc, request_id=REQUEST_ID), repeat, number),
            "decode_us": _per_call_us(functools.partial(from_rpc_error, wire), repeat, number),
            "status_bytes": len(status.proto.SerializeToString()),
        }
    return out


def main() -> None:
    """Print the median encode and decode CPU time per error, with the run-to-run spread."""
    for name, row in run(repeat=7, number=2000).items():
        encode, decode = row["encode_us"], row["decode_us"]
        print(f"{name:24s} encode {encode['median']:6.2f} us (spread {encode['spread']:.0%})"
              f"  decode {decode['median']:6.2f} us (spread {decode['spread']:.0%})"
              f"  {row['status_bytes']} bytes")


if __name__ == "__main__":
    main()
