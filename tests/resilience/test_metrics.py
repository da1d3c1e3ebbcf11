"""track_errors: the seed's error metrics, the same families the gRPC server counts into."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from prometheus_client import CollectorRegistry

from octollm_grpc import errors
from octollm_grpc.observability._server_metrics import ServerMetrics
from octollm_grpc.resilience import track_errors
from octollm_grpc.server.aio import server_interceptors as aio_interceptors
from octollm_grpc.testing import FakeClock
from tests.servers import aio_server


def _count(registry: CollectorRegistry, error_type: str, component: str) -> float | None:
    return registry.get_sample_value("octollm_errors_total",
                                     {"error_type": error_type, "component": component})


def _duration(registry: CollectorRegistry, error_type: str) -> tuple[float | None, float | None]:
    labels = {"error_type": error_type}
    return (registry.get_sample_value("octollm_error_duration_seconds_count", labels),
            registry.get_sample_value("octollm_error_duration_seconds_sum", labels))


async def test_counts_octollm_errors_by_code_and_component_with_their_duration() -> None:
    """An LLMAPIError after 2.5 s: errors_total +1 and 2.5 s observed under LLM_API_ERROR."""
    registry, clock = CollectorRegistry(), FakeClock()

    @track_errors("orchestrator", registry=registry, clock=clock)
    async def call_llm(prompt: str) -> str:
        await clock.async_sleep(2.5)
        raise errors.LLMAPIError("openai", status_code=503, error_message=prompt)

    for _ in range(2):
        with pytest.raises(errors.LLMAPIError):
            await call_llm("hi")
    assert _count(registry, "LLM_API_ERROR", "orchestrator") == 2
    assert _duration(registry, "LLM_API_ERROR") == (2, 5.0)


def test_sync_functions_and_errors_outside_the_hierarchy() -> None:
    """A bare exception counts as INTERNAL_ERROR (as the server counts it); success counts 0."""
    registry = CollectorRegistry()

    @track_errors("worker", registry=registry)
    def job(fail: bool) -> str:
        if fail:
            raise KeyError("x")
        return "done"

    assert job(False) == "done"
    assert _count(registry, "INTERNAL_ERROR", "worker") is None
    with pytest.raises(KeyError):
        job(True)
    assert _count(registry, "INTERNAL_ERROR", "worker") == 1
    assert not asyncio.iscoroutinefunction(job) and job.__name__ == "job"


async def test_same_series_as_a_real_grpc_server() -> None:
    """A real aio server and track_errors on one registry count into the same families."""
    registry = CollectorRegistry()

    async def get_task(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        raise errors.TaskNotFoundError(request.decode())

    handler = grpc.method_handlers_generic_handler(
        "test.Tasks", {"Get": grpc.unary_unary_rpc_method_handler(get_task)})
    interceptors = aio_interceptors(metrics=ServerMetrics(registry))
    async with aio_server([handler], interceptors) as target:
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/test.Tasks/Get")(b"t-1", timeout=10)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND

    @track_errors("orchestrator", registry=registry)
    def fails() -> None:
        raise errors.TaskNotFoundError("t-2")

    with pytest.raises(errors.TaskNotFoundError):
        fails()
    assert _count(registry, "TASK_NOT_FOUND", "grpc_server") == 1
    assert _count(registry, "TASK_NOT_FOUND", "orchestrator") == 1
    assert _duration(registry, "TASK_NOT_FOUND")[0] == 2
