"""The equal-work peer: the same failed-call work as our stack, assembled from other libraries.

What a team would write by hand instead of using octollm-grpc, doing what our default stack does
for a ``TaskNotFoundError``:

- grpc-interceptor's ``ServerInterceptor`` / ``AsyncServerInterceptor`` (``intercept``) catch
  the handler's exception;
- a request id: the caller's ``x-request-id`` when sent, else a new one, sent back as a trailer;
- grpcio-status builds the rich status: ``ErrorInfo`` (reason, domain, the task id),
  ``ResourceInfo`` (the task) and ``RequestInfo`` (the request id), the same details our stack
  sends (less our envelope);
- one structlog JSON line per failed call with the same fields as ours (method, code, error
  code, request id, duration, peer), through structlog's own ``WriteLoggerFactory``;
- prometheus-client: a handled counter and a handling-time histogram per method and code.

Used by the ``peer_full`` variant of :mod:`benchmarks.variants`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import prometheus_client
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_interceptor import AsyncServerInterceptor, ServerInterceptor
from grpc_interceptor.exceptions import NotFound
from grpc_status import rpc_status

DOMAIN = "octollm.grpc"
REQUEST_ID_HEADER = "x-request-id"
_RESOURCE_TYPE = "octollm.tasks.v1.Task"


class PeerTaskNotFound(NotFound):
    """The handler's error in the peer stack: grpc-interceptor's NotFound plus the task id."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task {task_id} not found")
        self.task_id = task_id


class _Instruments:
    """The peer's logger and metrics, made once per server process."""

    def __init__(self) -> None:
        sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the server process
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.WriteLoggerFactory(file=sink),
            cache_logger_on_first_use=True,
        )
        self.log = structlog.get_logger("peer")
        labels = ("grpc_type", "grpc_service", "grpc_method", "grpc_code")
        self.handled = prometheus_client.Counter(
            "peer_grpc_server_handled_total", "Calls completed, by code", labels)
        self.handling = prometheus_client.Histogram(
            "peer_grpc_server_handling_seconds", "Time to handle a call", labels[:3])


_instruments: _Instruments | None = None


def _get_instruments() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


def _request_id(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


def _rich_status(ex: PeerTaskNotFound, request_id: str) -> grpc.Status:
    details = []
    for message in (
        error_details_pb2.ErrorInfo(
            reason="TASK_NOT_FOUND", domain=DOMAIN, metadata={"task_id": ex.task_id}),
        error_details_pb2.ResourceInfo(
            resource_type=_RESOURCE_TYPE, resource_name=ex.task_id,
            description=ex.details),
        error_details_pb2.RequestInfo(request_id=request_id),
    ):
        packed = any_pb2.Any()
        packed.Pack(message)
        details.append(packed)
    status = rpc_status.to_status(status_pb2.Status(
        code=code_pb2.NOT_FOUND, message=ex.details, details=details))
    return status._replace(
        trailing_metadata=(*status.trailing_metadata, (REQUEST_ID_HEADER, request_id)))


def _split(method_name: str) -> tuple[str, str]:
    service, _, name = method_name.lstrip("/").rpartition("/")
    return service, name


def _finish(
    context: Any, method_name: str, start: float, request_id: str,
    ex: Exception | None,
) -> grpc.Status | None:
    """Count and time the call; for a failure, log it and return the status to abort with."""
    inst = _get_instruments()
    duration = time.perf_counter() - start
    service, name = _split(method_name)
    if ex is None:
        inst.handled.labels("unary", service, name, "OK").inc()
        inst.handling.labels("unary", service, name).observe(duration)
        return None
    if not isinstance(ex, PeerTaskNotFound):
        raise ex
    inst.handled.labels("unary", service, name, "NOT_FOUND").inc()
    inst.handling.labels("unary", service, name).observe(duration)
    inst.log.warning(
        "grpc.call.failed", grpc_method=method_name, grpc_code="NOT_FOUND",
        error_code="TASK_NOT_FOUND", request_id=request_id,
        duration_ms=round(duration * 1000.0, 3), peer=context.peer(), message=ex.details)
    return _rich_status(ex, request_id)


class PeerStack(ServerInterceptor):  # type: ignore[misc]
    """The hand-assembled stack for ``grpc.server``."""

    def __init__(self) -> None:
        _get_instruments()

    def intercept(
        self, method: Callable[..., Any], request_or_iterator: Any, context: Any,
        method_name: str,
    ) -> Any:
        start = time.perf_counter()
        request_id = _request_id(context.invocation_metadata())
        try:
            response = method(request_or_iterator, context)
        except Exception as ex:  # the peer maps what it knows, re-raises the rest
            status = _finish(context, method_name, start, request_id, ex)
            assert status is not None
            context.abort_with_status(status)
            raise  # pragma: no cover - abort_with_status raises
        _finish(context, method_name, start, request_id, None)
        return response


class AioPeerStack(AsyncServerInterceptor):  # type: ignore[misc]
    """The hand-assembled stack for ``grpc.aio.server``."""

    def __init__(self) -> None:
        _get_instruments()

    async def intercept(
        self, method: Callable[..., Any], request_or_iterator: Any, context: Any,
        method_name: str,
    ) -> Any:
        start = time.perf_counter()
        request_id = _request_id(context.invocation_metadata())
        try:
            response = await method(request_or_iterator, context)
        except Exception as ex:  # as above
            status = _finish(context, method_name, start, request_id, ex)
            assert status is not None
            await context.abort(status.code, status.details, status.trailing_metadata)
            raise  # pragma: no cover - abort raises
        _finish(context, method_name, start, request_id, None)
        return response
