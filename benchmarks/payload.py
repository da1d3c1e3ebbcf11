"""The wire contract of the benchmark service: method names and a realistic ~1 KiB message.

Messages are a ``google.protobuf.Value`` holding a ``Struct`` (no extra protos): a task record
with a description, tags and nested metadata, about the size of a typical ``Task`` response.
Not a bare ``Struct``: grpc-interceptor treats any iterable response (a ``Struct`` iterates its
keys) as a response stream, and its unary calls then fail with "Failed to serialize response!".
"""

from __future__ import annotations

from google.protobuf import struct_pb2

SERVICE = "octollm.bench.v1.Bench"
GET_TASK = "GetTask"
GET_MISSING_TASK = "GetMissingTask"
GET_TASK_PATH = f"/{SERVICE}/{GET_TASK}"
GET_MISSING_TASK_PATH = f"/{SERVICE}/{GET_MISSING_TASK}"
#: A method the caller is always over its rate limit for (the load-shedding path).
GET_THROTTLED_TASK = "GetThrottledTask"
GET_THROTTLED_TASK_PATH = f"/{SERVICE}/{GET_THROTTLED_TASK}"

STORM_SERVICE = "octollm.bench.v1.Storm"
WORK = "Work"
WORK_PATH = f"/{STORM_SERVICE}/{WORK}"

#: Metadata key carrying the monotonic start time of the call an attempt belongs to, so the
#: storm server can attribute every attempt it receives to the caller's logical call.
CALL_START_KEY = "x-bench-call-start"

serialize = struct_pb2.Value.SerializeToString
deserialize = struct_pb2.Value.FromString


def task_message(task_id: str = "task-7f3c9a2e-000042") -> struct_pb2.Value:
    """A task record of about 1 KiB serialized (the request and the response of GetTask)."""
    message = struct_pb2.Value()
    message.struct_value.update({
        "task_id": task_id,
        "description": (
            "Summarise the incident timeline for the payments outage, list every affected "
            "service with its owner, correlate the alert history with the deploy log, and "
            "draft a customer-facing status update in plain language. "
        ) * 3,
        "priority": 5,
        "status": "RUNNING",
        "timeout_s": 300,
        "tags": ["incident", "payments", "summary", "customer-facing", "p1"],
        "metadata": {
            "tenant": "acme-corp",
            "requested_by": "oncall@acme.example",
            "arm": "planner",
            "capabilities": ["search", "summarise", "draft"],
            "created_at": "2026-11-28T12:00:00Z",
            "updated_at": "2026-11-28T12:00:05Z",
            "attempt": 1,
            "budget": {"tokens": 4096, "cost_usd": 0.42},
        },
    })
    return message


def task_id_of(request: struct_pb2.Value) -> str:
    """The ``task_id`` field of a request message."""
    return request.struct_value.fields["task_id"].string_value
