"""One instance of every class in the hierarchy, for round-trip tests."""

from __future__ import annotations

from octollm_grpc import errors as e

UNICODE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"

SAMPLES: list[e.OctoLLMError] = [
    e.OctoLLMError(UNICODE, details={"nested": {"list": [1, 2.5, None, True, "x"]}}),
    e.ValidationError("bad value", field="name"),
    e.InvalidInputError("Task description is required", field="description"),
    e.ValidationErrors([{"field": "description", "message": "Description is required"},
                        {"field": "priority", "message": "Priority must be between 1 and 10"}]),
    e.TaskNotFoundError("task-42"),
    e.AuthenticationError(),
    e.AuthorizationError("missing scope tasks:write", details={"scope": "tasks:write"}),
    e.PiiDetectedError("email"),
    e.InvalidStateError("Task task-1 is already completed", details={"subject": "task-1"}),
    e.ResourceError("out of sandboxes", retry_after=2),
    e.ArmUnavailableError(["code", "web-search"]),
    e.CapacityExceededError("queue full", details={"queue_depth": 5000}, retry_after=0.25),
    e.RateLimitError(limit=100, window=60, retry_after=30),
    e.CircuitOpenError("arm:50052", retry_after=1.5),
    e.SystemError("disk full"),
    e.InternalError(),
    e.DatabaseError("insert", OSError("database is locked")),
    e.CacheError("redis down", details={"node": "cache-1"}),
    e.NetworkError("connection reset"),
    e.SerializationError("bad json", details={"offset": 17}),
    e.TimeoutError("llm call", 30),
    e.ExternalError("upstream failed"),
    e.LLMAPIError("openai", 503, "overloaded"),
    e.VectorDBError("qdrant timeout"),
    e.ThirdPartyAPIError("github 502"),
    e.NotFoundError("no such widget", details={"widget": "w-9"}),
    e.AlreadyExistsError("widget w-9 exists"),
    e.AbortedError("lost the race", retry_after=0.5),
    e.OutOfRangeError("offset past the end", field="offset"),
    e.ResourceExhaustedError("disk quota", retry_after=60),
    e.UnimplementedError("no such feature"),
    e.CancelledCallError("the caller went away"),
]
